"""Tasks: labelled images split into train / val / test, held as tensors (on the GPU when searching there).

`load_task(spec)` reads:
  * "digits"         scikit-learn's bundled handwritten digits (real data, no download), 8x8 grey
                     upscaled to 32x32 RGB; a fixed 20% stratified test split.
  * "cifar10:DIR"    CIFAR-10 in torchvision's on-disk layout (DIR/cifar-10-batches-py), read locally.
  * "DIR"            an ImageFolder tree: DIR/train/<class>/*, and DIR/val/ and/or DIR/test/.
The validation split that drives search-time metrics is carved from train unless DIR/val exists next to
DIR/test; the test split is touched only for the final accuracy. Splits do not depend on the search
seed, so runs with different seeds are compared on the same data.

Small data sets are kept whole, as uint8, on the search device; batches are normalised and augmented
there (random crop + horizontal flip), so a GPU never waits on a CPU loader.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .errors import UsageError
from .result import atomic_write

SPLIT_SEED = 0  # fixed: the data split is part of the task, not of the search


@dataclass
class Task:
    name: str
    train: tuple[torch.Tensor, torch.Tensor]   # uint8 images N x 3 x H x W, int64 labels
    val: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    flip: bool = True        # horizontal flips are wrong for digits, right for natural images
    pad: int = 4             # random-crop padding

    @property
    def image_size(self) -> int:
        return int(self.train[0].shape[-1])

    def to(self, device) -> "Task":
        """Move every split to `device` once (a no-op when already there)."""
        move = lambda s: (s[0].to(device), s[1].to(device))
        self.train, self.val, self.test = move(self.train), move(self.val), move(self.test)
        return self

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return (x.float() / 255.0 - mean) / std

    def batches(self, split: str, batch_size: int, generator: torch.Generator | None = None,
                augment: bool = False, drop_last: bool = False):
        """Yield normalised (x, y) batches; shuffled by `generator` when given (CPU generator, so
        the order is the same on every device)."""
        x, y = getattr(self, split)
        n = len(y)
        order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
        order = order.to(x.device)
        stop = n - n % batch_size if drop_last and n >= batch_size else n
        for i in range(0, stop, batch_size):
            idx = order[i:i + batch_size]
            xb = x[idx]
            if augment:
                xb = self._augment(xb, generator)
            yield self.normalize(xb), y[idx]

    def _augment(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        b, _, h, w = x.shape
        p = self.pad
        off = torch.randint(0, 2 * p + 1, (2, b), generator=generator).to(x.device)
        xp = F.pad(x, (p, p, p, p))
        rows = (off[0][:, None] + torch.arange(h, device=x.device))[:, :, None]
        cols = (off[1][:, None] + torch.arange(w, device=x.device))[:, None, :]
        x = xp.permute(0, 2, 3, 1)[torch.arange(b, device=x.device)[:, None, None], rows, cols].permute(0, 3, 1, 2)
        if self.flip:
            flip = (torch.rand(b, generator=generator) < 0.5).to(x.device).view(b, 1, 1, 1)
            x = torch.where(flip, x.flip(3), x)
        return x.contiguous()

    @torch.no_grad()
    def correct(self, model: torch.nn.Module, split: str, device=None, batch_size: int = 1000) -> torch.Tensor:
        """Per-image top-1 correctness of `model` (put in eval mode, restored after) on a split, in the
        split's order, as a CPU bool tensor: two models scored on the same split can be compared image by
        image (paired), which is far tighter than comparing two accuracies."""
        was_training = model.training
        model.eval()
        out = []
        for xb, yb in self.batches(split, batch_size):
            if device is not None:
                xb, yb = xb.to(device), yb.to(device)
            out.append((model(xb).argmax(1) == yb).cpu())
        model.train(was_training)
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool)

    def accuracy(self, model: torch.nn.Module, split: str, device=None, batch_size: int = 1000) -> float:
        """Top-1 accuracy of `model` on a split: the mean of `correct`."""
        return accuracy_of(self.correct(model, split, device, batch_size))


def accuracy_of(correct: torch.Tensor) -> float:
    """Accuracy from a correctness vector (0 for an empty split)."""
    return int(correct.sum()) / max(len(correct), 1)


# Bilevel methods (DARTS-style: architecture parameters step on held data) take their architecture steps on
# a fixed half of the TRAINING split, the weights on the other half (EnTranNAS App. B.1, as DARTS). The
# task's val split scores the delivered network (the Eq. 19 reward) and test reports it: neither is
# ever trained on, by weights or by architecture parameters.
ARCH_FRACTION = 0.5


def arch_split(task: Task, fraction: float = ARCH_FRACTION) -> tuple[Task, Task]:
    """(weight task, architecture task): copies of `task` whose `train` is a fixed stratified part of the
    task's training split (`fraction` of each class to the architecture part, the rest to the weights),
    disjoint from each other and from val and test, which both copies share unchanged. The parts do not
    depend on the search seed (SPLIT_SEED) and stay on the device the task is on."""
    x, y = task.train
    device = x.device
    part_w, part_a = _split(x.cpu(), y.cpu(), fraction)
    move = lambda s: (s[0].to(device), s[1].to(device))
    return dataclasses.replace(task, train=move(part_w)), dataclasses.replace(task, train=move(part_a))


def _split(x, y, fraction, seed=SPLIT_SEED):
    """Stratified split: `fraction` of every class goes to the second part."""
    rng = np.random.default_rng(seed)
    y_np = y.numpy()
    second = []
    for c in np.unique(y_np):
        idx = np.flatnonzero(y_np == c)
        rng.shuffle(idx)
        second.extend(idx[: max(1, int(round(fraction * len(idx))))])
    mask = np.zeros(len(y_np), bool)
    mask[second] = True
    keep, held = torch.from_numpy(~mask), torch.from_numpy(mask)
    return (x[keep], y[keep]), (x[held], y[held])


def _digits(image_size: int) -> Task:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images).float().unsqueeze(1) / 16.0  # 1797 x 1 x 8 x 8 in [0, 1]
    x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    x = (x.clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    y = torch.from_numpy(d.target).long()
    train, test = _split(x, y, 0.2)
    train, val = _split(*train, 0.15)
    return Task("digits", train, val, test, 10, (0.19,) * 3, (0.33,) * 3, flip=False, pad=2)


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm"}
SPECS = "digits, cifar10:DIR, or an ImageFolder directory (DIR/train/<class>/*, DIR/val/ and/or DIR/test/)"


def _images(cdir: Path) -> list[Path]:
    """The image files of one class folder, in a fixed order (the loader's and the check's)."""
    return sorted(f for f in cdir.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES) if cdir.is_dir() else []


def _read_image(f: Path, image_size: int) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(f) as im:
            im = im.convert("RGB")
            if im.size != (image_size, image_size):
                im = im.resize((image_size, image_size), Image.BILINEAR)
            return torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1)
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise UsageError(f"image {f} cannot be read ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None


def _read_folder(root: Path, image_size: int, classes: list[str]):
    xs, ys = [], []
    for ci, c in enumerate(classes):
        for f in _images(root / c):
            xs.append(_read_image(f, image_size))
            ys.append(ci)
    if not xs:
        raise UsageError(f"no images found under {root}")
    return torch.stack(xs), torch.tensor(ys, dtype=torch.long)


def _cache_path(root: Path, image_size: int) -> Path:
    key = hashlib.sha1(f"{root.resolve()}|{image_size}|{os.path.getmtime(root)}".encode()).hexdigest()[:16]
    base = Path(os.environ.get("HWNAS_CACHE", Path.home() / ".cache" / "hwnas"))
    return base / f"imagefolder-{key}.pt"


def _folder_layout(root: Path) -> tuple[list[str], list[str]]:
    """(class names, held-out splits) of an ImageFolder tree, refusing one that cannot make a
    classification task: no train/, fewer than two classes with images, no val/ or test/ next to
    train/, or a held-out split with no image of train's classes. Reads directory listings only."""
    if not (root / "train").is_dir():
        raise UsageError(f"data directory {root} has no train/ folder (expected ImageFolder layout: train/ and val/ or test/)")
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    with_images = [c for c in classes if _images(root / "train" / c)]
    if len(with_images) < 2:
        raise UsageError(f"data directory {root}/train has {len(with_images)} class folder(s) with images "
                         f"({', '.join(with_images) or 'none'}); a classification task needs at least 2")
    held = [s for s in ("val", "test") if (root / s).is_dir()]
    if not held:
        raise UsageError(f"data directory {root} has no val/ or test/ folder next to train/")
    for s in held:
        if not any(_images(root / s / c) for c in classes):
            raise UsageError(f"data directory {root}/{s} holds no images in train's class folders "
                             f"({', '.join(classes[:5])}{', ...' if len(classes) > 5 else ''})")
    return classes, held


def check_data(spec: str, limit: int | None = None) -> None:
    """Refuse a data spec that cannot make a real classification task, with the reason, before any
    work and cheaply: the layout from directory listings, and for an ImageFolder not yet in the tensor
    cache, a decode of the first and last image of every class folder (a full read is the loader's
    job; a bad image it meets later is still named in one line)."""
    if limit is not None and limit < 1:
        raise UsageError(f"data limit must be >= 1 image per split, got {limit}")
    if spec == "digits":
        return
    if spec.startswith("cifar10:"):
        _check_cifar10(Path(spec.split(":", 1)[1]))
        return
    root = Path(spec)
    if not root.exists():
        raise UsageError(f"data {spec!r} does not exist; valid choices: {SPECS}")
    if not root.is_dir():
        raise UsageError(f"data {spec!r} is not a directory; valid choices: {SPECS}")
    if not any(root.iterdir()):
        raise UsageError(f"data directory {spec} is empty; valid choices: {SPECS}")
    classes, held = _folder_layout(root)
    if _cache_path(root, 32).exists():
        return   # the loader read every image of this tree (at the default size) already
    for s in ("train", *held):
        for c in classes:
            files = _images(root / s / c)
            for f in {files[0], files[-1]} if files else ():
                _read_image(f, 8)


def _check_cifar10(root: Path) -> None:
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import check_integrity

    base = root / CIFAR10.base_folder
    if not base.is_dir():
        raise UsageError(f"{root} has no cifar-10-batches-py/ (torchvision's CIFAR-10 layout); nothing is downloaded")
    # the checksums torchvision checks on every load: a truncated batch fails here, not in every trial
    for name, md5 in CIFAR10.train_list + CIFAR10.test_list:
        if not check_integrity(str(base / name), md5):
            raise UsageError(f"CIFAR-10 file {base / name} is missing or corrupt (checksum); "
                             "re-extract cifar-10-python.tar.gz there")


def _image_folder(root: Path, image_size: int) -> Task:
    classes, held = _folder_layout(root)
    cache = _cache_path(root, image_size)
    if cache.exists():
        splits = torch.load(cache, weights_only=True)
    else:
        splits = {s: _read_folder(root / s, image_size, classes) for s in ["train", *held]}
        cache.parent.mkdir(parents=True, exist_ok=True)
        # a unique temp name: Ray workers of one study may read the same folder at the same time
        atomic_write(cache, lambda p: torch.save(splits, p))
    if len(held) == 2:
        train, val, test = splits["train"], splits["val"], splits["test"]
    else:
        test = splits[held[0]]
        train, val = _split(*splits["train"], 0.1)
    mean, std = _stats(train[0])
    return Task(root.name, train, val, test, len(classes), mean, std)


def _cifar10(root: Path) -> Task:
    from torchvision.datasets import CIFAR10

    load = lambda train: CIFAR10(str(root), train=train, download=False)
    tr, te = load(True), load(False)
    to_t = lambda ds: (torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(ds.targets))
    train, val = _split(*to_t(tr), 0.1)
    return Task("cifar10", train, val, to_t(te), 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))


def _stats(x: torch.Tensor):
    xf = x[:5000].float() / 255.0
    return tuple(xf.mean((0, 2, 3)).tolist()), tuple(xf.std((0, 2, 3)).clamp_min(1e-3).tolist())


def load_task(spec: str = "digits", *, image_size: int = 32, limit: int | None = None) -> Task:
    """Load a task from its spec (see module doc). `limit` keeps at most N images of each split, stratified."""
    check_data(spec, limit)   # the reason a spec cannot make a task, in one line, before the long read
    if spec == "digits":
        task = _digits(image_size)
    elif spec.startswith("cifar10:"):
        task = _cifar10(Path(spec.split(":", 1)[1]))
    else:
        task = _image_folder(Path(spec), image_size)
    if limit is not None:
        task.train, task.val, task.test = (_subset(s, limit) for s in (task.train, task.val, task.test))
    return task


def _subset(split: tuple[torch.Tensor, torch.Tensor], limit: int):
    """At most `limit` images of a split, stratified (every class keeps its share) and drawn with the
    fixed SPLIT_SEED, in a shuffled order. Folders list images class by class, so the first N would
    hold one class only."""
    x, y = split
    if len(y) <= limit:
        return split
    (_, _), (xs, ys) = _split(x, y, limit / len(y))
    order = torch.from_numpy(np.random.default_rng(SPLIT_SEED).permutation(len(ys)))
    return xs[order][:limit], ys[order][:limit]
