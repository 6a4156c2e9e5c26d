"""Profile the user's own device (CPU or CUDA GPU) into a `Profile` for the MBConv space.

Layers are timed *in context*: whole probe networks run forward at batch 1 and a timestamp is taken
at every layer boundary (CUDA: an event per boundary, read after one synchronize), so each layer is
timed with caches, allocator and launch queue as a real inference leaves them. Timing a layer alone
instead keeps its weights warm in cache and misses the hand-over between layers; on the 2-vCPU AMD
EPYC this project was first measured on (1 thread, 224x224) that under-predicted random whole networks
by 11-19 %, while the in-context profile's mean signed error stayed within +-2 %
(benchmarks/profile_accuracy.py; on the present Xeon machine see README's numbers and noise floor).

Probe design: every probe network keeps all 20 searchable layers; in each round, each layer takes each
of its variants (k, e) -- and, with `se=True`, (k, e) with SE 0.25 and with SE 0.5 -- in exactly one
probe, in an order shuffled per layer, so neighbours vary (a random Latin design). A variant's runtime
is the mean over rounds of its segment time; the constant is the median of stem + layer 0 + layer 21 +
head over all probes; SE factors are s_se = R(k, e, se) / R(k, e) per layer and (k, e) (Eq. 14), for
SE 0.25 and SE 0.5 apart (the paper's observation (i), s_0.25 ~ s_0.5, is then a measurement, not an
assumption: the profile's `se_factors` and `se50_factors`).

Drift: every timed item (probe or validation network) gets `warmup` untimed and `repeats` timed
forwards per pass, in `passes` shuffled passes, and keeps its median over passes; `profile_device`
interleaves the validation networks with the probes, so a load change on a shared machine hits
profile and validation alike. clock="cpu" (thread CPU time, 1 CPU thread) leaves out time the process
spends preempted, for machines that other jobs share.

`validate` compares random whole networks with the profile's prediction (paper, Pixel 1: 1.76 % mean
error, 1.32 ms RMSE).
"""
from __future__ import annotations

import dataclasses
import math
import os
import platform
import random
import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..errors import UsageError
from ..spaces.mbconv import SE_RATIOS, Block, MBConvArch, layer_specs
from .profiles import LAYERS, VARIANTS, Profile
from .runtime import exact_runtime

CLOCKS = {
    "wall": time.perf_counter,  # latency as a user sees it; needs an otherwise idle machine
    # CPU time of the calling thread: with 1 thread torch computes there, so this is the latency the
    # network would have on an idle machine even while other processes share the cores (preemption
    # does not count). Not meaningful with more threads (work runs in the pool) nor on a GPU.
    "cpu": time.thread_time,
}


@dataclass(frozen=True, kw_only=True)
class Timing:
    """How every item is timed: device, CPU threads, clock and the repeat / warm-up / pass counts."""

    device: str = "cpu"       # "cpu" or "cuda[:N]"
    threads: int = 1          # torch.set_num_threads while timing (CPU)
    repeats: int = 5          # timed forwards per item and pass; their median is the pass's value
    warmup: int = 2           # untimed forwards before them (first-call allocations, caches)
    passes: int = 4           # shuffled passes over all items; the median over passes is kept
    clock: str = "wall"

    def __post_init__(self):
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise UsageError(f"unknown device {self.device!r}; valid choices: cpu, cuda")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise UsageError("device 'cuda' asked for but no CUDA GPU is available; valid choices: cpu")
        if not (isinstance(self.threads, int) and self.threads >= 1):
            raise UsageError(f"threads must be an integer >= 1, got {self.threads!r}")
        if self.repeats < 1 or self.warmup < 0 or self.passes < 1:
            raise UsageError(f"need repeats >= 1, warmup >= 0, passes >= 1; got {self.repeats}, {self.warmup}, "
                             f"{self.passes}")
        if self.clock not in CLOCKS:
            raise UsageError(f"unknown clock {self.clock!r}; valid choices: {', '.join(CLOCKS)}")
        if self.clock == "cpu" and (self.device != "cpu" or self.threads != 1):
            raise UsageError("clock 'cpu' (thread CPU time) needs device cpu with threads 1; use clock 'wall'")

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)


# -- timing primitives -------------------------------------------------------------------------------
@contextmanager
def timing_env(threads: int):
    """Fixed thread count and flushed denormals while timing; the caller's settings come back after."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)  # random weights can drift into denormals, which are slow on CPU
    try:
        with torch.inference_mode(), torch.random.fork_rng(devices=[]):  # building nets must not move the seed
            yield
    finally:
        torch.set_flush_denormal(False)  # torch's default (it has no getter to restore from)
        torch.set_num_threads(old)


def _segments(net: nn.Module, x: torch.Tensor, clock: Callable[[], float]) -> list[float]:
    """One forward of a ChildNet with a timestamp at every boundary: [stem, layer..., head] in ms."""
    if x.is_cuda:
        marks = [torch.cuda.Event(enable_timing=True) for _ in range(len(net.layers) + 3)]
        mark = lambda i: marks[i].record()
    else:
        marks = [0.0] * (len(net.layers) + 3)
        mark = lambda i: marks.__setitem__(i, clock())
    mark(0)
    x = net.stem(x)
    mark(1)
    for i, layer in enumerate(net.layers.values()):
        x = layer(x)
        mark(i + 2)
    net.head(x)
    mark(len(marks) - 1)
    if x.is_cuda:
        torch.cuda.synchronize()
        return [a.elapsed_time(b) for a, b in zip(marks, marks[1:])]
    return [(b - a) * 1e3 for a, b in zip(marks, marks[1:])]


def time_segments(net: nn.Module, x: torch.Tensor, t: Timing) -> list[float]:
    """Median over `t.repeats` forwards of each boundary-to-boundary segment (ms), after warm-up."""
    for _ in range(t.warmup):
        _segments(net, x, CLOCKS[t.clock])
    runs = [_segments(net, x, CLOCKS[t.clock]) for _ in range(t.repeats)]
    return [statistics.median(col) for col in zip(*runs)]


def time_network(net: nn.Module, x: torch.Tensor, t: Timing) -> float:
    """Median time (ms) of a whole forward pass of any module over `t.repeats`, after warm-up."""
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    now = CLOCKS[t.clock]
    for _ in range(t.warmup):
        net(x)
    times = []
    for _ in range(t.repeats):
        sync()
        t0 = now()
        net(x)
        sync()
        times.append((now() - t0) * 1e3)
    return statistics.median(times)


def run_interleaved(jobs: list[Callable[[], object]], t: Timing, seed: int, progress: bool) -> list[list]:
    """Run every job once per pass, in a fresh shuffled order each pass; returns each job's results."""
    rng = random.Random(seed)
    runs = [[] for _ in jobs]
    order = list(range(len(jobs)))
    for _ in _bar(range(t.passes), f"timing {len(jobs)} networks", progress):
        rng.shuffle(order)
        for j in order:
            runs[j].append(jobs[j]())
    return runs


def _median_lists(runs: list[list[float]]) -> list[float]:
    return [statistics.median(col) for col in zip(*runs)]


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what platform knows."""
    try:
        return next(l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                    if l.startswith("model name"))
    except (OSError, StopIteration):  # not Linux: keep platform's name
        return platform.processor() or platform.machine()


def host_identity() -> dict:
    """What says which machine a profile was measured on (recorded as measured["host"]): the host name,
    CPU model and logical CPU count identify it; torch's default thread count is recorded beside them."""
    return {"hostname": platform.node(), "cpu": cpu_model(), "logical_cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads()}


def measured_here(profile: Profile) -> tuple[bool, str]:
    """Was `profile` measured on this machine's CPU? (yes/no, and why in words). Only our own profiles
    record a host (profiles written before it was recorded, and the bundled Pixel 1 tables, never match)."""
    host = (profile.measured or {}).get("host")
    if profile.measured is None:
        return False, f"profile {profile.name} is a table of another device ({profile.device}), not this machine"
    if host is None:
        return False, (f"profile {profile.name} records no host (profiled before hosts were recorded), so it "
                       f"cannot say it is this machine; profile again to compare")
    device = profile.measured.get("settings", {}).get("timing", {}).get("device", "cpu")
    if device != "cpu":
        return False, f"profile {profile.name} timed {device}, and ONNX Runtime times the CPU here"
    here = host_identity()
    diff = [k for k in ("hostname", "cpu", "logical_cpus") if host.get(k) != here[k]]
    if diff:
        there = ", ".join(f"{k} {host.get(k)!r}" for k in diff)
        return False, (f"profile {profile.name} was measured on another machine ({there}; here "
                       f"{', '.join(repr(here[k]) for k in diff)})")
    return True, f"profile {profile.name} was measured on this machine ({here['hostname']}, {here['cpu']})"


def _device_name(t: Timing) -> str:
    if t.device.startswith("cuda"):
        return f"{torch.cuda.get_device_name(t.torch_device)} (CUDA, batch 1, torch {torch.__version__})"
    return f"{cpu_model()} (CPU, {t.threads} thread{'s' * (t.threads > 1)}, batch 1, torch {torch.__version__})"


def _bar(iterable, desc: str, progress: bool):
    if not progress:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, leave=False)


# -- probes and profiles --------------------------------------------------------------------------------
def probe_plan(rounds: int, se: bool, seed: int) -> list[tuple[Block, ...]]:
    """The probe networks: per round, each layer takes each variant in one probe, in a per-layer random order."""
    if rounds < 1:
        raise UsageError(f"rounds must be >= 1, got {rounds}")
    variants = [Block(k, e, r) for r in (SE_RATIOS if se else (0.0,)) for k, e in VARIANTS]
    rng = random.Random(seed)
    plan = []
    for _ in range(rounds):
        order = [rng.sample(variants, len(variants)) for _ in LAYERS]
        plan += [tuple(order[i][j] for i in range(len(LAYERS))) for j in range(len(variants))]
    return plan


def profile_from_probes(plan: list[tuple[Block, ...]], segments: list[list[float]], **fields) -> Profile:
    """Aggregate probe timings ([stem, 0, 1..20, 21, head] per probe) into a Profile."""
    samples: dict[tuple[int, Block], list[float]] = {}
    for blocks, seg in zip(plan, segments):
        for i, b in zip(LAYERS, blocks):
            samples.setdefault((i, b), []).append(seg[1 + i])
    ms = {key: statistics.fmean(v) for key, v in samples.items()}
    tables = {i: {(k, e): ms[(i, Block(k, e, 0.0))] for k, e in VARIANTS} for i in LAYERS}
    factors = lambda r: {(i, k, e): ms[(i, Block(k, e, r))] / tables[i][(k, e)]
                         for i in LAYERS for k, e in VARIANTS if (i, Block(k, e, r)) in ms}   # Eq. 14
    constant = statistics.median(seg[0] + seg[1] + seg[-2] + seg[-1] for seg in segments)
    return Profile(constant_ms=constant, tables=tables, se_factors=factors(0.25), se50_factors=factors(0.5),
                   **fields)


def random_arch(rng: random.Random, width: float, image_size: int, se: bool) -> MBConvArch:
    """A network with each searchable layer drawn uniformly from its choices (skip where allowed)."""
    ratios = SE_RATIOS if se else (0.0,)
    blocks = []
    for spec in layer_specs(width, image_size)[1:-1]:
        options = [Block(k, e, r) for k, e in VARIANTS for r in ratios] + [Block(skip=True)] * spec.skippable
        blocks.append(rng.choice(options))
    return MBConvArch(tuple(blocks), width=width, image_size=image_size)


@dataclass(frozen=True)
class Validation:
    """Predicted vs measured runtimes of random whole networks (the check of paper Fig. 4, left)."""

    archs: tuple[str, ...]
    predicted_ms: tuple[float, ...]
    measured_ms: tuple[float, ...]

    @property
    def mae_pct(self) -> float:
        return 100 * statistics.fmean(abs(p - m) / m for p, m in zip(self.predicted_ms, self.measured_ms))

    @property
    def rmse_ms(self) -> float:
        return math.sqrt(statistics.fmean((p - m) ** 2 for p, m in zip(self.predicted_ms, self.measured_ms)))

    @property
    def bias_pct(self) -> float:
        """Mean signed error: > 0 when the profile over-predicts."""
        return 100 * statistics.fmean((p - m) / m for p, m in zip(self.predicted_ms, self.measured_ms))

    def summary(self) -> str:
        return (f"{len(self.archs)} random networks: mean abs error {self.mae_pct:.2f} %, RMSE {self.rmse_ms:.2f} ms, "
                f"bias {self.bias_pct:+.2f} % (measured {min(self.measured_ms):.1f}-{max(self.measured_ms):.1f} ms)")

    def to_json(self) -> dict:
        return {"mae_pct": self.mae_pct, "rmse_ms": self.rmse_ms, "bias_pct": self.bias_pct,
                **{k: list(v) for k, v in dataclasses.asdict(self).items()}}


def _measure(t: Timing, image_size: int, width: float, plan: list, archs: list[MBConvArch], seed: int,
             progress: bool) -> tuple[list[list[float]], list[float]]:
    """Probe segment times and whole-network times, all in one interleaved schedule."""
    if image_size < 16:
        raise UsageError(f"image_size must be >= 16, got {image_size}")
    dev = t.torch_device
    x = torch.randn(1, 3, image_size, image_size, device=dev)
    with timing_env(t.threads):
        build = lambda arch: arch.build().to(dev).eval()
        probes = [build(MBConvArch(blocks, width=width, image_size=image_size)) for blocks in plan]
        nets = [build(arch) for arch in archs]
        jobs = [lambda n=n: time_segments(n, x, t) for n in probes] + [lambda n=n: time_network(n, x, t) for n in nets]
        runs = run_interleaved(jobs, t, seed, progress)
    return [_median_lists(r) for r in runs[:len(probes)]], [statistics.median(r) for r in runs[len(probes):]]


def _report(profile: Profile, archs: list[MBConvArch], measured: list[float], verbose: bool) -> Validation:
    v = Validation(tuple(map(str, archs)), tuple(exact_runtime(profile, a) for a in archs), tuple(measured))
    if verbose:
        print(f"profile {profile.name}: {v.summary()}")
    return v


def validate(profile: Profile, n: int = 30, timing: Timing | None = None, *, seed: int = 1, progress: bool = True,
             verbose: bool = True) -> Validation:
    """Time `n` random networks at the profile's input size and width against the profile's prediction.

    `timing` defaults to the one the profile was measured with (our profiles), else Timing().
    Random networks use SE only if the profile has SE factors.
    """
    if n < 1:
        raise UsageError(f"validate needs n >= 1 networks, got {n}")
    if timing is None:
        timing = Timing(**(profile.measured or {}).get("settings", {}).get("timing", {}))
    rng = random.Random(seed)
    archs = [random_arch(rng, profile.width, profile.input_size, bool(profile.se_factors)) for _ in range(n)]
    _, measured = _measure(timing, profile.input_size, profile.width, [], archs, seed, progress)
    return _report(profile, archs, measured, verbose)


def profile_device(device: str = "cpu", threads: int = 1, image_size: int = 224, repeats: int = 5,
                   validate_n: int = 30, out: str | Path | None = None, width: float = 1.0, *, warmup: int = 2,
                   passes: int = 4, rounds: int = 2, se: bool = True, clock: str = "wall", seed: int = 0,
                   name: str | None = None, progress: bool = True, verbose: bool = True) -> Profile:
    """Measure a device profile in context, validate it on `validate_n` random networks timed in the same
    interleaved schedule (0: no validation), and save it to `out` (our JSON format) when given."""
    t = Timing(device=device, threads=threads, repeats=repeats, warmup=warmup, passes=passes, clock=clock)
    if validate_n < 0:
        raise UsageError(f"validate_n must be >= 0, got {validate_n}")
    plan = probe_plan(rounds, se, seed)
    rng = random.Random(seed + 1)
    archs = [random_arch(rng, width, image_size, se) for _ in range(validate_n)]
    segments, measured = _measure(t, image_size, width, plan, archs, seed, progress)
    settings = {"timing": dataclasses.asdict(t), "image_size": image_size, "width": width, "rounds": rounds,
                "se": se, "seed": seed, "method": "in-context layer boundaries, interleaved passes"}
    profile = profile_from_probes(plan, segments, name=name or f"{t.torch_device.type}-{threads}t-{image_size}px",
                                  device=_device_name(t), input_size=image_size, width=width,
                                  measured={"settings": settings, "host": host_identity()})
    if validate_n:
        v = _report(profile, archs, measured, verbose)
        profile = dataclasses.replace(profile, measured={**profile.measured, "validation": v.to_json()})
    if out is not None:
        path = profile.save(out)
        if verbose:
            print(f"wrote profile {profile.name} to {path}")
    return profile
