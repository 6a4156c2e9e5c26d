"""What one search reports: per-epoch metrics and the final result with its deployable child.

On disk a result is a folder: result.json (everything but the weights), model.pt (the architecture
string, the space it belongs to and the child's state dict: `load_model` rebuilds it with no
retraining) and model.onnx (the same child, exported for deployment).
"""
from __future__ import annotations

import base64
import dataclasses
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn


def pack_bits(mask) -> str:
    """A per-image correctness vector as text: "<n>:<base64 of the bits, 8 a byte>" (45 bytes for the
    359 validation images of digits), so trials.csv and result.json can hold it and two trials that
    saw the same images can be compared image by image (a paired test). "" for no vector."""
    m = np.asarray(mask.cpu() if isinstance(mask, torch.Tensor) else mask, dtype=bool).ravel()
    return f"{m.size}:{base64.b64encode(np.packbits(m).tobytes()).decode('ascii')}"


def unpack_bits(text: str | None) -> np.ndarray | None:
    """The bool vector `pack_bits` wrote; None for "" / None / anything not in its format."""
    if not text or not isinstance(text, str) or ":" not in text:
        return None
    n, _, b64 = text.partition(":")
    try:
        bits = np.unpackbits(np.frombuffer(base64.b64decode(b64, validate=True), dtype=np.uint8), count=int(n))
    except (ValueError, TypeError):
        return None
    return bits.astype(bool)


@dataclass(frozen=True, kw_only=True)
class EpochMetrics:
    epoch: int                # epochs completed, 1-based
    wall_s: float             # cumulative training wall time of the search
    loss: float               # mean training loss of the epoch (CE + cost term)
    ce: float                 # mean training cross-entropy
    runtime_ms: float | None  # exact device runtime of the architecture derived now (None: no profile)
    flops: float              # multiply-accumulates of the architecture derived now
    val_acc: float            # validation accuracy of the search network at the end of the epoch
    arch: str                 # the architecture derived now
    extra: dict[str, Any] = field(default_factory=dict)  # method-specific (fixed layers, lambda, ...)


@dataclass(kw_only=True)
class SearchResult:
    method: str
    hyperparameters: dict[str, Any]
    settings: dict[str, Any]
    arch: str
    runtime_ms: float | None
    flops: float
    params: int
    val_acc: float
    test_acc: float
    epochs: int
    wall_s: float
    history: list[EpochMetrics]
    extra: dict[str, Any] = field(default_factory=dict)
    val_correct: str = ""     # per-validation-image correctness of the child, pack_bits format
                              # (val_acc is its mean): lets the outer loop compare trials paired
    model: nn.Module | None = None
    arch_obj: Any = None

    def to_json(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("model", "arch_obj")}
        d["history"] = [dataclasses.asdict(h) for h in self.history]
        return d

    def save(self, out: str | os.PathLike, *, onnx: bool = True) -> dict[str, Path]:
        """Write result.json, model.pt and model.onnx into `out`, each file atomically."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"result": out / "result.json", "model": out / "model.pt"}
        atomic_text(paths["result"], json.dumps(self.to_json(), indent=2))
        if self.model is not None:
            blob = {"arch": self.arch, "space": self.arch_obj.space, "state_dict": self.model.state_dict()}
            atomic_write(paths["model"], lambda p: torch.save(blob, p))
            if onnx:
                paths["onnx"] = out / "model.onnx"
                atomic_write(paths["onnx"], lambda p: export_onnx(self.model, self.arch_obj, p))
        return paths


def check_writable(out: str | os.PathLike) -> None:
    """Refuse an output folder we cannot write, before any work, leaving nothing behind: create it
    (and any missing parents) and a probe file, then remove whatever did not exist before."""
    from .errors import UsageError

    out = Path(out)
    missing = []
    p = out
    while not p.exists():
        missing.append(p)
        p = p.parent
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out, prefix=".probe")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise UsageError(f"--out {out} is not writable ({e.strerror or e})") from None
    finally:
        for m in missing:  # deepest first
            try:
                m.rmdir()
            except OSError:
                pass


_UMASK = os.umask(0)   # read once (it can only be read by setting it), then put back
os.umask(_UMASK)


def atomic_write(path: str | os.PathLike, write) -> Path:
    """Write `path` as a whole or not at all: `write(tmp)` fills a uniquely named temp file in the same
    folder (so concurrent writers never share one), which is flushed to disk and renamed over `path`
    (os.replace is atomic on POSIX). A kill at any moment leaves the old file or the new one, never a
    truncated one; the fsync makes that hold across a power loss too."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)   # mkstemp's 0600 would make every file we write owner-only
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda p: Path(p).write_text(text))


def export_onnx(model: nn.Module, arch, path) -> None:
    """Export the child for deployment at its own input size (batch dimension dynamic)."""
    model = model.eval().cpu()
    x = torch.zeros(1, *arch.input_shape)
    torch.onnx.export(model, (x,), str(path), input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)


def load_model(path: str | os.PathLike) -> tuple[Any, nn.Module]:
    """Rebuild a saved child (architecture + trained weights) from model.pt; no retraining."""
    from .spaces import parse_arch

    blob = torch.load(path, map_location="cpu", weights_only=True)
    arch = parse_arch(blob["space"], blob["arch"])
    model = arch.build()
    model.load_state_dict(blob["state_dict"])
    return arch, model.eval()
