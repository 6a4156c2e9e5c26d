"""Profile the user's own device (CPU or CUDA GPU) into a `Profile` for the MBConv space.

Layers are timed *in context*: whole probe networks run forward at batch 1 and a timestamp is taken
at every layer boundary (CUDA: an event per boundary, read after one synchronize), so each layer is
timed with the caches, allocator and launch queue as a real inference leaves them. Timing a layer
alone instead keeps its weights warm in cache and misses the hand-over between layers; on this
project's CPU that underestimated whole random networks by several percent and up to 12-18 %.

Probe design: every probe network keeps all 20 searchable layers; in each round, each layer takes each
of its variants (k, e) -- and, with `se=True`, (k, e) with SE 0.25 -- in exactly one probe, in an
order shuffled per layer, so neighbours vary (a random Latin design). A variant's runtime is the mean
over rounds of its median-over-repeats segment time; the constant is the median of stem + layer 0 +
layer 21 + head over all probes; SE factors are s = R(k, e, SE) / R(k, e) (Eq. 14).

`validate` then times N random whole networks and compares them with the profile's prediction
(paper, Pixel 1: 1.76 % mean error, 1.32 ms RMSE).
"""
from __future__ import annotations

import dataclasses
import math
import platform
import random
import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import UsageError
from ..spaces.mbconv import SE_RATIOS, Block, MBConvArch, layer_specs
from .profiles import LAYERS, VARIANTS, Profile
from .runtime import exact_runtime


# -- timing primitives -------------------------------------------------------------------------------
def check_device(device: str) -> torch.device:
    if not (device == "cpu" or device.startswith("cuda")):
        raise UsageError(f"unknown device {device!r}; valid choices: cpu, cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("device 'cuda' asked for but no CUDA GPU is available; valid choices: cpu")
    return torch.device(device)


@contextmanager
def timing_env(threads: int):
    """Fixed thread count and flushed denormals while timing; the caller's settings come back after."""
    if not (isinstance(threads, int) and threads >= 1):
        raise UsageError(f"threads must be an integer >= 1, got {threads!r}")
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)  # random weights can drift into denormals, which are slow on CPU
    try:
        with torch.inference_mode(), torch.random.fork_rng(devices=[]):  # building nets must not move the seed
            yield
    finally:
        torch.set_flush_denormal(False)  # torch's default (it has no getter to restore from)
        torch.set_num_threads(old)


CLOCKS = {
    "wall": time.perf_counter,  # latency as a user sees it; needs an otherwise idle machine
    # CPU time of the calling thread: with 1 thread torch computes there, so this is the latency the
    # layer would have on an idle machine even while other processes share the cores (preemption
    # does not count). Not meaningful with more threads (work runs in the pool) nor on a GPU.
    "cpu": time.thread_time,
}


def check_clock(clock: str, device: torch.device, threads: int) -> None:
    if clock not in CLOCKS:
        raise UsageError(f"unknown clock {clock!r}; valid choices: {', '.join(CLOCKS)}")
    if clock == "cpu" and (device.type != "cpu" or threads != 1):
        raise UsageError("clock 'cpu' (thread CPU time) needs device cpu with threads 1; use clock 'wall'")


def _segments(net: nn.Module, x: torch.Tensor, clock=time.perf_counter) -> list[float]:
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


def _median_segments(net: nn.Module, x: torch.Tensor, repeats: int, warmup: int, clock: str = "wall") -> list[float]:
    for _ in range(warmup):
        _segments(net, x, CLOCKS[clock])
    runs = [_segments(net, x, CLOCKS[clock]) for _ in range(repeats)]
    return [statistics.median(col) for col in zip(*runs)]


def time_network(net: nn.Module, x: torch.Tensor, repeats: int, warmup: int, clock: str = "wall") -> float:
    """Median time (ms, `clock`) of a whole forward pass, after `warmup` untimed passes."""
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    now = CLOCKS[clock]
    for _ in range(warmup):
        net(x)
    times = []
    for _ in range(repeats):
        sync()
        t0 = now()
        net(x)
        sync()
        times.append((now() - t0) * 1e3)
    return statistics.median(times)


def _device_name(device: torch.device, threads: int) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA, batch 1, torch {torch.__version__})"
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                   if l.startswith("model name"))
    except (OSError, StopIteration):  # not Linux: keep platform's name
        pass
    return f"{cpu} (CPU, {threads} thread{'s' * (threads > 1)}, batch 1, torch {torch.__version__})"


def _bar(iterable, desc: str, progress: bool):
    if not progress:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, leave=False)


# -- profiling -----------------------------------------------------------------------------------------
def measure_profile(device: str = "cpu", threads: int = 1, image_size: int = 224, width: float = 1.0,
                    repeats: int = 20, warmup: int = 5, rounds: int = 2, se: bool = True, seed: int = 0,
                    name: str | None = None, progress: bool = True, clock: str = "wall") -> Profile:
    """Time the layer variants in context (see the module doc) and return them as a Profile."""
    dev = check_device(device)
    check_clock(clock, dev, threads)
    if repeats < 1 or warmup < 0 or rounds < 1:
        raise UsageError(f"need repeats >= 1, warmup >= 0, rounds >= 1; got {repeats}, {warmup}, {rounds}")
    if image_size < 16:
        raise UsageError(f"image_size must be >= 16, got {image_size}")
    plan = probe_plan(rounds, se, seed)
    x = torch.randn(1, 3, image_size, image_size, device=dev)
    segments = []
    with timing_env(threads):
        for blocks in _bar(plan, "profiling layers", progress):
            net = MBConvArch(blocks, width=width, image_size=image_size).build().to(dev).eval()
            segments.append(_median_segments(net, x, repeats, warmup, clock))
    settings = dict(device=device, threads=threads, image_size=image_size, width=width, repeats=repeats,
                    warmup=warmup, rounds=rounds, se=se, seed=seed, clock=clock,
                    method="in-context layer boundaries")
    return profile_from_probes(plan, segments, name=name or f"{dev.type}-{threads}t-{image_size}px",
                               device=_device_name(dev, threads), input_size=image_size, width=width,
                               measured={"settings": settings})


def probe_plan(rounds: int, se: bool, seed: int) -> list[tuple[Block, ...]]:
    """The probe networks: per round, each layer takes each variant in one probe, in a per-layer random order."""
    variants = [Block(k, e, 0.0) for k, e in VARIANTS] + ([Block(k, e, 0.25) for k, e in VARIANTS] if se else [])
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
    se_factors = {(i, k, e): ms[(i, Block(k, e, 0.25))] / tables[i][(k, e)]
                  for i in LAYERS for k, e in VARIANTS if (i, Block(k, e, 0.25)) in ms}
    constant = statistics.median(seg[0] + seg[1] + seg[-2] + seg[-1] for seg in segments)
    return Profile(constant_ms=constant, tables=tables, se_factors=se_factors, **fields)


# -- validation ----------------------------------------------------------------------------------------
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


def random_arch(rng: random.Random, width: float, image_size: int, se: bool) -> MBConvArch:
    """A network with each searchable layer drawn uniformly from its choices (skip where allowed)."""
    ratios = SE_RATIOS if se else (0.0,)
    blocks = []
    for spec in layer_specs(width, image_size)[1:-1]:
        options = [Block(k, e, r) for k, e in VARIANTS for r in ratios] + [Block(skip=True)] * spec.skippable
        blocks.append(rng.choice(options))
    return MBConvArch(tuple(blocks), width=width, image_size=image_size)


def validate(profile: Profile, n: int = 20, *, device: str | None = None, threads: int | None = None,
             repeats: int | None = None, warmup: int | None = None, clock: str | None = None, seed: int = 1,
             progress: bool = True, verbose: bool = True) -> Validation:
    """Time `n` random networks at the profile's input size and width against the profile's prediction.

    Device, threads, repeats, warm-up and clock default to those the profile was measured with (our
    profiles) or cpu / 1 / 20 / 5 / wall. Random networks use SE only if the profile has SE factors.
    """
    if n < 1:
        raise UsageError(f"validate needs n >= 1 networks, got {n}")
    s = (profile.measured or {}).get("settings", {})
    device, threads = device or s.get("device", "cpu"), threads or s.get("threads", 1)
    repeats, warmup = repeats or s.get("repeats", 20), s.get("warmup", 5) if warmup is None else warmup
    clock = clock or s.get("clock", "wall")
    dev = check_device(device)
    check_clock(clock, dev, threads)
    rng = random.Random(seed)
    archs = [random_arch(rng, profile.width, profile.input_size, bool(profile.se_factors)) for _ in range(n)]
    x = torch.randn(1, 3, profile.input_size, profile.input_size, device=dev)
    measured = []
    with timing_env(threads):
        for arch in _bar(archs, "validating", progress):
            measured.append(time_network(arch.build().to(dev).eval(), x, repeats, warmup, clock))
    result = Validation(tuple(map(str, archs)), tuple(exact_runtime(profile, a) for a in archs), tuple(measured))
    if verbose:
        print(f"profile {profile.name}: {result.summary()}")
    return result


def profile_device(device: str = "cpu", threads: int = 1, image_size: int = 224, repeats: int = 20,
                   validate_n: int = 20, out: str | Path | None = None, width: float = 1.0, *, warmup: int = 5,
                   rounds: int = 2, se: bool = True, seed: int = 0, name: str | None = None,
                   progress: bool = True, clock: str = "wall") -> Profile:
    """Measure a profile, validate it on `validate_n` random networks (0: skip) and save it to `out`."""
    profile = measure_profile(device, threads, image_size, width, repeats, warmup, rounds, se, seed, name, progress,
                              clock)
    if validate_n:
        v = validate(profile, validate_n, progress=progress, seed=seed + 1)
        profile = dataclasses.replace(profile, measured={**profile.measured, "validation": v.to_json()})
    if out is not None:
        path = profile.save(out)
        print(f"wrote profile {profile.name} to {path}")
    return profile
