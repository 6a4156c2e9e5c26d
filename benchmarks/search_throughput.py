"""Images/s of the single-path search step (search phase: weights and thresholds, lam > 0) on the CPU,
before and after a change, in ONE process: the code of a git revision (`--before`, default the commit
before issue 14's work) and this checkout's, each under its own package name, stepped in turn (one
step of each configuration per round) so that the load of a shared machine falls on all alike.

Each step is what train_epoch runs per batch: draw a batch (random crop + flip on the uint8 tensors),
channels_last, decisions, forward, Eq. 10 loss, backward, Adam on the weights and on the thresholds.
Configurations (all at --width and 32x32 images of --data):
  before        the --before revision at --batch (today's study: width 0.25, batch 64)
  after         this checkout, same width and batch
  after+fused   this checkout, the weights' Adam fused (torch's one-kernel CPU Adam; results equal to
                float rounding, 1 ulp), not the default
  after@B       this checkout at batch --big-batch (not the study default: a larger batch changes the
                search, see README)

    python benchmarks/search_throughput.py --data /work/data/cifar10 --data-limit 10000
    python benchmarks/search_throughput.py --data digits --steps 5      # quick look, no download
"""
from __future__ import annotations

import argparse
import importlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BEFORE = "00a9d9b"   # main before issue 14 (CPU performance)


def package_at(rev: str, tmp: Path):
    """The `searchers` package of git revision `rev`, imported as `searchers_<rev>` (its imports are relative)."""
    name = f"searchers_{rev}"
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "searchers"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive, check=True)
    shutil.move(str(tmp / "searchers"), str(tmp / name))
    sys.path.insert(0, str(tmp))
    return importlib.import_module(name)


class Config:
    """One searcher in its search phase, stepping on its own batches."""

    def __init__(self, label, pkg, a, batch, fused=False):
        self.label, self.batch = label, batch
        task = pkg.load_task(a.data, limit=a.data_limit)
        # the package's own module: the registry names classes by absolute path ("searchers.single_path")
        cls = importlib.import_module(f"{pkg.__name__}.single_path").SinglePathNAS
        assert cls.__module__.startswith(pkg.__name__), cls.__module__
        self.s = s = cls(cls.make_params(lam=a.lam), task,
                         pkg.RunSettings(epochs=4, seed=a.seed, batch_size=batch, width=a.width, device="cpu"))
        if fused:
            weights = [g["params"] for g in s.opt.param_groups][0]
            s.opt = torch.optim.Adam(weights, lr=s.params.lr, fused=True)
        for m in s.net.searchable():
            m.set_threshold_units()   # what the first search epoch does
        s.net.train()
        self.gen = torch.Generator().manual_seed(a.seed)
        self.it = iter(())
        self.times: list[float] = []

    def batch_xy(self):
        try:
            return next(self.it)
        except StopIteration:
            self.it = self.s.task.batches("train", self.batch, self.gen, augment=True, drop_last=True)
            return next(self.it)

    def step(self, lam):
        s = self.s
        t0 = time.perf_counter()
        x, y = self.batch_xy()
        x = x.contiguous(memory_format=torch.channels_last)
        s.opt.zero_grad(set_to_none=True)
        s.arch_opt.zero_grad(set_to_none=True)
        s._loss(x, y, lam)[0].backward()
        s.opt.step()
        s.arch_opt.step()
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="digits")
    ap.add_argument("--data-limit", type=int, default=None)
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--big-batch", type=int, default=256, help="the after@B configuration (0: leave it out)")
    ap.add_argument("--steps", type=int, default=30, help="timed steps per configuration, one of each per round")
    ap.add_argument("--warmup", type=int, default=3, help="untimed rounds first (allocator, oneDNN primitives)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--lam", type=float, default=0.02)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--before", default=BEFORE, help="git revision timed as 'before'")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    import searchers as after
    with tempfile.TemporaryDirectory() as tmp:
        before = package_at(a.before, Path(tmp))
        configs = [Config("before", before, a, a.batch), Config("after", after, a, a.batch),
                   Config("after+fused", after, a, a.batch, fused=True)]
        if a.big_batch:
            configs.append(Config(f"after@{a.big_batch}", after, a, a.big_batch))
        for r in range(a.warmup + a.steps):
            for c in configs:
                t = c.step(a.lam)
                if r >= a.warmup:
                    c.times.append(t)
    print(f"single-path search step, {a.data} (limit {a.data_limit}), width {a.width:g}, 32x32, {a.threads} "
          f"thread(s), torch {torch.__version__}; before = {a.before}; {a.steps} steps of each "
          f"configuration in turn after {a.warmup} untimed rounds; load average {os.getloadavg()[0]:.2f}")
    base = None
    print(f"\n{'configuration':<14} {'batch':>5} {'steps':>5} {'ms/step':>9} {'images/s':>9} {'x before':>9}")
    for c in configs:
        rate = c.batch * len(c.times) / sum(c.times)
        base = base or rate
        print(f"{c.label:<14} {c.batch:>5} {len(c.times):>5} {1e3 * statistics.median(c.times):9.1f} "
              f"{rate:9.1f} {rate / base:9.2f}")


if __name__ == "__main__":
    main()
