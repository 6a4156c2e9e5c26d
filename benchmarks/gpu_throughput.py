"""GPU throughput of the single-path search (issue goals, measured on one GPU; skipped without CUDA):
  * images/s of the search step on CIFAR-10-sized 32x32 batches (bf16 autocast, channels_last)
  * 4 concurrent trials vs 1 sharing one GPU (goal >= 2.5x), as 4 processes.

    python benchmarks/gpu_throughput.py [--batch 1024] [--width 1.0] [--steps 50]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def search_images_per_s(batch: int, width: float, steps: int, queue=None) -> float:
    import torch
    import torch.nn.functional as F

    from searchers.single_path import SuperNet, split_parameters
    from searchers.training import autocast

    dev = torch.device("cuda")
    net = SuperNet(width, 32, 10, "sigmoid").to(dev).to(memory_format=torch.channels_last)
    weights, arch = split_parameters(net)
    opt = torch.optim.Adam(weights, fused=True)
    x = torch.randn(batch, 3, 32, 32, device=dev).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), device=dev)

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast(dev):
            loss = F.cross_entropy(net(x, net.decisions()), y)
        loss.backward()
        opt.step()

    for _ in range(5):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    ips = batch * steps / (time.perf_counter() - t0)
    if queue is not None:
        queue.put(ips)
    return ips


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--steps", type=int, default=50)
    args = p.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("skipped: no CUDA GPU on this machine (these goals are measured on a GPU)")
        return
    one = search_images_per_s(args.batch, args.width, args.steps)
    print(f"single-path search step: {one:,.0f} images/s (batch {args.batch}, width {args.width}, bf16, channels_last)")
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=search_images_per_s, args=(args.batch, args.width, args.steps, q)) for _ in range(4)]
    for pr in procs:
        pr.start()
    for pr in procs:
        pr.join()
    total = sum(q.get() for _ in procs)
    print(f"4 concurrent trials: {total:,.0f} images/s in total = {total / one:.2f}x one trial (goal >= 2.5x)")


if __name__ == "__main__":
    main()
