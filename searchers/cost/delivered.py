"""Measure a delivered model on this machine: `python -m searchers measure DIR` (DIR holds result.json
and model.onnx as searchers/result.py writes them), also run by `studies/tune_lambda.py --measure`.

Always: model.onnx as delivered (the task's image size and width) timed with ONNX Runtime at 1 thread
and at all threads (onnx_timing.py). When the profile the runtime came from was measured on this
machine (measure.measured_here: the host it records), also predicted vs measured: the prediction is
the exact table sum of Eq. 11 for the architecture's decisions, which the profile made at its own
input size and width (224x224, width 1 by default) with its own thread count and clock; so the same
decisions are built at that size and width and timed that way. The children are fully convolutional
with a global pool, and stride and image size change no weight shape, so at the same width the
delivered trained weights load into the profile-size network; at another width (a width-0.25 search
priced by a width-1 profile) it gets fresh weights, which time the same. Timed twice: exported to
ONNX (ONNX Runtime) and in torch as the profile itself timed networks, so the error says how much is
the profile's and how much is the runtime's. The error is (predicted - measured) / measured: > 0
when the profile over-predicts.
"""
from __future__ import annotations

import dataclasses
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import UsageError
from ..result import atomic_text, export_onnx, load_model
from .onnx_timing import OnnxTiming, all_threads, onnxruntime, time_onnx
from .profiles import Profile, load_profile
from .runtime import exact_runtime

MEASURED = "measured.json"


@dataclass(frozen=True, kw_only=True)
class Comparison:
    """The profile's prediction for the delivered decisions against their measured time on this machine."""

    profile: str
    input_size: int
    width: float
    threads: int
    clock: str
    weights: str                 # "trained" (the delivered weights) or "untrained" (other width)
    predicted_ms: float
    onnx: OnnxTiming
    torch_ms: float              # the same network timed in torch, the way the profile was measured

    @property
    def error_pct(self) -> float:
        return 100 * (self.predicted_ms - self.onnx.median_ms) / self.onnx.median_ms

    @property
    def torch_error_pct(self) -> float:
        return 100 * (self.predicted_ms - self.torch_ms) / self.torch_ms

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "onnx": self.onnx.to_json(), "error_pct": self.error_pct,
                "torch_error_pct": self.torch_error_pct}


@dataclass(frozen=True, kw_only=True)
class DeliveredTiming:
    folder: str
    arch: str
    onnxruntime: str               # version
    repeats: int
    timings: tuple[OnnxTiming, ...]    # model.onnx as delivered: 1 thread, then all threads
    profile: str | None            # None: the architecture's space has no device profile
    profile_device: str | None
    predicted_ms: float | None     # the profile's runtime of the architecture (at its own size)
    this_machine: bool
    why: str                       # why the profile is (not) this machine's, or has no prediction
    comparison: Comparison | None

    def lines(self) -> list[str]:
        first = self.timings[0]
        size = "x".join(map(str, first.input_shape[2:]))
        times = ", ".join(f"{t.threads} thread{'s' * (t.threads > 1)} {t.median_ms:.2f} ms" for t in self.timings)
        out = [f"measured  {self.folder}/model.onnx at {size} with ONNX Runtime {self.onnxruntime} on this CPU: "
               f"{times} (median of {self.repeats} runs after {first.warmup} warm-up)"]
        c = self.comparison
        if c is None:
            if self.predicted_ms is not None:
                out.append(f"  not compared with the prediction ({self.predicted_ms:.2f} ms on {self.profile} "
                           f"at its own size): {self.why}")
            else:
                out.append(f"  not compared: {self.why}")
            return out
        th = f"{c.threads} thread{'s' * (c.threads > 1)}"
        out += [f"predicted {c.predicted_ms:.2f} ms on profile {c.profile} ({c.input_size}x{c.input_size}, width "
                 f"{c.width:g}, {th}, {c.clock} clock; {self.why})",
                 f"  vs measured {c.onnx.median_ms:.2f} ms: the same decisions at {c.input_size}x{c.input_size}, "
                 f"width {c.width:g}, {c.weights} weights, ONNX Runtime, {th}: error {c.error_pct:+.1f} %",
                 f"  and in torch as the profile was timed {c.torch_ms:.2f} ms: error {c.torch_error_pct:+.1f} %"]
        return out

    def to_json(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["timings"] = [t.to_json() for t in self.timings]
        d["comparison"] = self.comparison.to_json() if self.comparison else None
        return {**d, "lines": self.lines()}


def check_folder(folder: str | Path) -> dict:
    """A result folder's result.json, or a one-line UsageError naming what is missing or broken."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a result folder (no such directory)")
    for name in ("result.json", "model.onnx"):
        if not (folder / name).is_file():
            raise UsageError(f"{folder} holds no {name}; a result folder has result.json and model.onnx "
                             f"(python -m searchers run ... --out DIR writes them)")
    try:
        result = json.loads((folder / "result.json").read_text())
        if not isinstance(result, dict) or not isinstance(result.get("arch"), str):
            raise ValueError
    except (OSError, UnicodeDecodeError, ValueError):
        raise UsageError(f"{folder}/result.json is not a search result (no 'arch' field)") from None
    return result


def measure_delivered(folder: str | Path, *, profile: str | Path | Profile | None = None, repeats: int = 20,
                      warmup: int = 3, shown: str | None = None) -> DeliveredTiming:
    """Time DIR/model.onnx here (1 thread, all threads) and, when `profile` (default: the one the
    result was priced on) was measured on this machine, predicted vs measured. Writes nothing."""
    from .measure import measured_here

    result = check_folder(folder)
    if repeats < 1 or warmup < 0:
        raise UsageError(f"need repeats >= 1 and warmup >= 0, got {repeats} and {warmup}")
    folder = Path(folder)
    if not isinstance(profile, Profile):
        profile = load_profile(profile or result.get("settings", {}).get("profile") or "pixel1-single-path")
    threads = sorted({1, all_threads()})
    timings = tuple(time_onnx(folder / "model.onnx", threads=t, repeats=repeats, warmup=warmup) for t in threads)
    arch = _mbconv_arch(result["arch"])
    base = dict(folder=shown or str(folder), arch=result["arch"], onnxruntime=onnxruntime().__version__,
                repeats=repeats, timings=timings)
    if arch is None:
        return DeliveredTiming(**base, profile=None, profile_device=None, predicted_ms=None, this_machine=False,
                               why="its search space has no device profile (FLOPs only)", comparison=None)
    predicted = exact_runtime(profile, arch)
    here, why = measured_here(profile)
    comparison = None
    if here and not (folder / "model.pt").is_file():
        why += "; but there is no model.pt to rebuild the network at the profile's size"
    elif here:
        comparison = _compare(folder, arch, profile, predicted, repeats, warmup)
    return DeliveredTiming(**base, profile=profile.name, profile_device=profile.device, predicted_ms=predicted,
                           this_machine=here, why=why, comparison=comparison)


def _mbconv_arch(text: str):
    from ..spaces.mbconv import MBConvArch

    return MBConvArch.parse(text) if text.startswith("mbconv") else None


def _compare(folder: Path, arch, profile: Profile, predicted: float, repeats: int, warmup: int) -> Comparison:
    """Build the delivered decisions at the profile's size and width and time them as the profile did."""
    from .measure import Timing, time_network, timing_env

    timing = dict((profile.measured or {}).get("settings", {}).get("timing", {}))
    t = Timing(device="cpu", threads=timing.get("threads", 1), clock=timing.get("clock", "wall"),
               repeats=repeats, warmup=warmup)
    _, trained = load_model(folder / "model.pt")
    at = dataclasses.replace(arch, width=profile.width, image_size=profile.input_size)
    same_width = arch.width == profile.width
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = at.build().eval()
    if same_width:   # stride and image size change no weight shape: the trained weights load as they are
        net.load_state_dict(trained.state_dict())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        export_onnx(net, at, path)
        onnx = time_onnx(path, threads=t.threads, repeats=repeats, warmup=warmup, clock=t.clock)
    with timing_env(t.threads):
        torch_ms = time_network(net, torch.randn(1, *at.input_shape), t)
    return Comparison(profile=profile.name, input_size=profile.input_size, width=profile.width, threads=t.threads,
                      clock=t.clock, weights="trained" if same_width else "untrained", predicted_ms=predicted,
                      onnx=onnx, torch_ms=torch_ms)


def write_measured(folder: str | Path, timing: DeliveredTiming) -> Path:
    """DIR/measured.json, written whole or not at all."""
    return atomic_text(Path(folder) / MEASURED, json.dumps(timing.to_json(), indent=2) + "\n")
