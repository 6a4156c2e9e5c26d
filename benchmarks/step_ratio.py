"""Cost of one search step relative to one training step of a compact child, per MBConv-space searcher,
in one run on the same data (digits at 32x32, channels_last, Adam on both sides):

  * single-path: the supernet at its start (every decision on: the largest network) vs the fixed
    largest child, all k5 e6 SE 0.5. Goal <= 1.10 (paper Sec. III-C: a search step costs about one
    step of a compact network).
  * dsnas: one DSNAS step (sampled path + dummy-1 search gradient + alpha update) on the all-k5e6
    path vs that child (all k5 e6, SE 0). Expected ~1: only the sampled child runs.
  * multi-path: one bilevel step (alpha on a validation batch, then the weights) vs the largest child
    of its space (all k5 e6, SE 0), the cheapest comparison for it; also the weight step alone.
  * gold, entran: cell spaces whose searchers expose no separate search-step / child-step entry
    points; skipped with a note.

Each step is timed interleaved (search, child, search, ...) after warm-up; medians are reported.

    python benchmarks/step_ratio.py                    # width 0.5, batch 32, 1 thread, CPU
    python benchmarks/step_ratio.py --width 1.0 --threads 2 --repeats 30
    python benchmarks/step_ratio.py --clock cpu        # thread CPU time: steadier on a busy machine
    python benchmarks/step_ratio.py --searchers single-path --width 0.25 --batch 64 \
        --data /work/data/cifar10 --data-limit 10000   # the CIFAR-10 study's width, batch and images
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from searchers import RunSettings, get_searcher, list_searchers, load_task  # noqa: E402
from searchers.multi_path import CANDIDATES  # noqa: E402
from searchers.spaces.mbconv import Block, MBConvArch  # noqa: E402

K5E6 = CANDIDATES.index(Block(5, 6, 0.0))
SKIPPED = {"gold": "cell space; its searcher exposes no search-step / child-step entry points",
           "entran": "cell space; its searcher exposes no search-step / child-step entry points",
           "random": "trains compact children only: its search step IS a child step (ratio 1 by construction)"}


def child_step_fn(arch: MBConvArch, x, y, device):
    child = arch.build().to(device).to(memory_format=torch.channels_last).train()
    opt = torch.optim.Adam(child.parameters(), lr=1e-3)

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(child(x), y).backward()
        opt.step()
    return step


def search_step_fns(name: str, s, x, y, xv, yv) -> dict[str, tuple]:
    """{row label: (search step, child architecture)} for one searcher (reaches into its step code)."""
    kw = dict(width=s.settings.width, image_size=s.task.image_size, num_classes=s.task.num_classes)
    largest_plain = MBConvArch(tuple(Block(5, 6, 0.0) for _ in range(20)), **kw)
    if name == "single-path":
        lam = s.params.lam

        def step():  # train_epoch's one-level search step (sigmoid variant: weights and thresholds)
            s.opt.zero_grad(set_to_none=True)
            s.arch_opt.zero_grad(set_to_none=True)
            s._loss(x, y, lam)[0].backward()
            s.opt.step()
            s.arch_opt.step()
        assert str(s.net.arch()) == str(MBConvArch.largest(**kw)), "supernet should start at the largest net"
        return {"supernet step": (step, MBConvArch.largest(**kw))}
    if name == "dsnas":
        path = [K5E6] * 20
        return {"sampled-path step": (lambda: s.search_step(x, y, path=path), largest_plain)}
    if name == "multi-path":
        def bilevel():
            s.arch_step(xv, yv, s.params.lam)
            s.weight_step(x, y)
        return {"bilevel step": (bilevel, largest_plain), "weight step only": (lambda: s.weight_step(x, y),
                                                                              largest_plain)}
    raise KeyError(name)


def timed(fn, device, clock) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = clock()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return clock() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--width", type=float, default=0.5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=15, help="timed steps per side (median kept)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--searchers", nargs="+", default=["single-path", "dsnas", "multi-path", "gold", "entran", "random"],
                    metavar="NAME", help="which searchers to time (default: all of the MBConv space and the notes)")
    ap.add_argument("--data", default="digits", help="task whose first batches are timed (images at its size)")
    ap.add_argument("--data-limit", type=int, default=None, help="images kept per split (stratified), as studies")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="cpu: this thread's CPU time, steadier on a shared machine (needs --threads 1, CPU)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.clock == "cpu" and (a.threads != 1 or a.device != "cpu"):
        ap.error("--clock cpu measures one thread: use it with --threads 1 on the CPU")
    clock = time.thread_time if a.clock == "cpu" else time.perf_counter
    device = torch.device(a.device)
    task = load_task(a.data, limit=a.data_limit)
    g = torch.Generator().manual_seed(a.seed)
    prep = lambda b: (b[0].to(device).contiguous(memory_format=torch.channels_last), b[1].to(device))
    x, y = prep(next(task.batches("train", a.batch, g, drop_last=True)))
    xv, yv = prep(next(task.batches("val", a.batch, g, drop_last=True)))
    settings = RunSettings(epochs=8, seed=a.seed, batch_size=a.batch, width=a.width, device=a.device)
    print(f"{task.name} {task.image_size}x{task.image_size}, batch {a.batch}, width {a.width:g}, {a.threads} thread(s), {a.device}, "
          f"torch {torch.__version__}; {a.clock} clock, median of {a.repeats} interleaved steps after {a.warmup} "
          "warm-up")
    rows, notes = [], []
    for name in a.searchers:
        if name not in list_searchers():
            notes.append(f"{name}: not registered here")
            continue
        if name in SKIPPED:
            notes.append(f"{name}: skipped ({SKIPPED[name]})")
            continue
        cls = get_searcher(name)
        s = cls(cls.make_params(), task, settings)
        for label, (search, arch) in search_step_fns(name, s, x, y, xv, yv).items():
            child = child_step_fn(arch, x, y, device)
            for _ in range(a.warmup):
                search(), child()
            ts, tc = [], []
            for _ in range(a.repeats):
                ts.append(timed(search, device, clock))
                tc.append(timed(child, device, clock))
            ms, mc = 1e3 * statistics.median(ts), 1e3 * statistics.median(tc)
            child_name = "all " + str(arch.blocks[0])
            rows.append((name, label, ms, child_name, mc, ms / mc))
    print(f"\n{'searcher':<12} {'search step':<18} {'ms':>8}   {'child':<16} {'ms':>8}   {'ratio':>6}")
    for name, label, ms, child_name, mc, ratio in rows:
        print(f"{name:<12} {label:<18} {ms:8.1f}   {child_name:<16} {mc:8.1f}   {ratio:6.2f}")
    print()
    for name, label, *_, ratio in rows:
        goal = "  (goal <= 1.10: " + ("met" if ratio <= 1.10 else "NOT met") + ")" if name == "single-path" else ""
        print(f"ratio {name} {label}: {ratio:.2f}{goal}")
    for n in notes:
        print(n)


if __name__ == "__main__":
    main()
