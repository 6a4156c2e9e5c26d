"""Time an exported ONNX model with ONNX Runtime on this machine's CPU (batch 1).

The deployable artefact of a search is model.onnx; this is how long it takes where it would run.
One session per thread count (intra-op threads; inter-op 1, sequential execution), `warmup` untimed
runs (session start, first-call allocations) and the median of `repeats` timed runs, so a stray
preemption on a shared machine does not move the number.

Clocks as in measure.py: "wall" (what a user waits) or "cpu" (the calling thread's CPU time, which
leaves out time the process spends preempted). "cpu" needs 1 thread: ONNX Runtime then computes in
the calling thread (checked here: its thread time equals wall time on an idle machine); with more
threads the work runs in its pool and the caller only waits.
"""
from __future__ import annotations

import os
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import UsageError
from .measure import CLOCKS


@dataclass(frozen=True, kw_only=True)
class OnnxTiming:
    """Median latency (ms) of one model at one thread count, with every timed run."""

    threads: int
    input_shape: tuple[int, ...]    # batch 1, as timed
    clock: str
    warmup: int
    times_ms: tuple[float, ...]

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times_ms)

    def to_json(self) -> dict:
        return {**asdict(self), "median_ms": self.median_ms}


def all_threads() -> int:
    """The CPUs this process may run on (its affinity mask, else every CPU)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:   # not Linux
        return os.cpu_count() or 1


def onnxruntime():
    """The onnxruntime module, or a one-line error saying how to get it."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise UsageError("timing ONNX models needs onnxruntime (pip install -e .)") from None
    return ort


def time_onnx(model: str | Path | bytes, *, threads: int, repeats: int = 20, warmup: int = 3,
              clock: str = "wall") -> OnnxTiming:
    """Run `model` (a path or its bytes) on a fixed random input at batch 1; median of `repeats` runs."""
    if repeats < 1 or warmup < 0 or threads < 1:
        raise UsageError(f"need repeats >= 1, warmup >= 0 and threads >= 1; got {repeats}, {warmup}, {threads}")
    if clock not in CLOCKS or (clock == "cpu" and threads != 1):
        raise UsageError(f"clock {clock!r} with {threads} threads; valid: wall, or cpu with 1 thread")
    ort = onnxruntime()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3   # warnings about unused initialisers are not the user's business
    source = model if isinstance(model, bytes) else str(model)
    session = ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    shape = tuple(d if isinstance(d, int) else 1 for d in inp.shape)   # the dynamic batch axis -> 1
    feed = {inp.name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
    now = CLOCKS[clock]
    for _ in range(warmup):
        session.run(None, feed)
    times = []
    for _ in range(repeats):
        t0 = now()
        session.run(None, feed)
        times.append((now() - t0) * 1e3)
    return OnnxTiming(threads=threads, input_shape=shape, clock=clock, warmup=warmup, times_ms=tuple(times))
