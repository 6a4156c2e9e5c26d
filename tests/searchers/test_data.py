import numpy as np
import pytest
import torch
from PIL import Image

from searchers import load_task
from searchers.errors import UsageError


def make_folder(root, splits=("train", "test"), per_class=12, size=20):
    rng = np.random.default_rng(0)
    for split in splits:
        for c, colour in (("red", 0), ("blue", 2)):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(per_class):
                img = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
                img[..., colour] = 200  # a class you can learn
                Image.fromarray(img).save(d / f"{i}.png")


def test_digits_is_embedded_and_split_without_overlap(digits):
    assert digits.num_classes == 10 and digits.image_size == 32
    n = [len(s[1]) for s in (digits.train, digits.val, digits.test)]
    assert sum(n) == 1797 and n[2] == pytest.approx(360, abs=10)
    assert digits.train[0].dtype == torch.uint8


def test_image_folder_with_test_split_carves_val_from_train(tmp_path, monkeypatch):
    monkeypatch.setenv("HWNAS_CACHE", str(tmp_path / "cache"))
    make_folder(tmp_path / "data")
    task = load_task(str(tmp_path / "data"))
    assert task.num_classes == 2 and task.image_size == 32
    assert len(task.test[1]) == 24 and len(task.train[1]) + len(task.val[1]) == 24 and len(task.val[1]) >= 2
    again = load_task(str(tmp_path / "data"))  # from the tensor cache
    assert torch.equal(again.train[0], task.train[0])
    x, y = next(task.batches("train", 8, torch.Generator().manual_seed(0), augment=True))
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32


def test_image_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="empty"):
        load_task(str(tmp_path / "empty"))
    make_folder(tmp_path / "only-train", splits=("train",))
    with pytest.raises(UsageError, match="val/ or test/"):
        load_task(str(tmp_path / "only-train"))
    with pytest.raises(UsageError, match="cifar-10-batches-py"):
        load_task(f"cifar10:{tmp_path}")


# -- a data spec that cannot make a classification task is refused with its reason, before any work --------

def _image(path, colour=0, fill=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.full((8, 8, 3), fill, np.uint8)
    img[..., colour] = 200
    Image.fromarray(img).save(path)


def _layout(root, name):
    """A broken ImageFolder tree of each kind the check must refuse."""
    if name == "file":
        root.write_text("not a folder")
    elif name == "empty-splits":
        (root / "train").mkdir(parents=True)
        (root / "test").mkdir()
    elif name == "one-class":
        _image(root / "train" / "a" / "0.png")
        _image(root / "test" / "a" / "0.png")
    elif name == "classes-without-images":
        for c in ("a", "b"):
            (root / "train" / c).mkdir(parents=True)
            (root / "train" / c / "notes.txt").write_text("no image here")
        _image(root / "test" / "a" / "0.png")
    elif name == "empty-test":
        for c in ("a", "b"):
            _image(root / "train" / c / "0.png")
        (root / "test" / "a").mkdir(parents=True)
    elif name == "test-of-other-classes":
        for c in ("a", "b"):
            _image(root / "train" / c / "0.png")
        _image(root / "test" / "z" / "0.png")
    elif name == "unreadable-image":
        for c in ("a", "b"):
            _image(root / "train" / c / "0.png")
            _image(root / "test" / c / "0.png")
        (root / "train" / "b" / "1.png").write_text("truncated")
    return root


@pytest.mark.parametrize("name, message", [
    ("missing", "does not exist; valid choices: digits, cifar10:DIR"),
    ("file", "is not a directory; valid choices"),
    ("empty-splits", "has 0 class folder(s) with images (none); a classification task needs at least 2"),
    ("one-class", "has 1 class folder(s) with images (a); a classification task needs at least 2"),
    ("classes-without-images", "has 0 class folder(s) with images"),
    ("empty-test", "test holds no images in train's class folders (a, b)"),
    ("test-of-other-classes", "test holds no images in train's class folders"),
    ("unreadable-image", "1.png cannot be read"),
])
def test_a_folder_that_cannot_make_a_task_is_refused_with_the_reason(tmp_path, monkeypatch, name, message):
    from searchers import check_data

    monkeypatch.setenv("HWNAS_CACHE", str(tmp_path / "cache"))
    root = _layout(tmp_path / "data", name)
    for check in (check_data, load_task):     # the cheap check and the loader say the same
        with pytest.raises(UsageError) as e:
            check(str(root))
        assert message in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "cache").exists()   # nothing written for a refused folder


def test_a_good_folder_and_the_embedded_task_pass_the_check(tmp_path, monkeypatch):
    from searchers import check_data

    monkeypatch.setenv("HWNAS_CACHE", str(tmp_path / "cache"))
    make_folder(tmp_path / "data", per_class=2, size=8)
    check_data(str(tmp_path / "data"))
    check_data("digits", limit=5)
    with pytest.raises(UsageError, match="data limit must be >= 1"):
        check_data("digits", limit=0)


def test_cifar10_files_are_checked_without_loading_them(tmp_path):
    from searchers import check_data

    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    with pytest.raises(UsageError, match="data_batch_1 is missing or corrupt"):
        check_data(f"cifar10:{tmp_path}")
    with pytest.raises(UsageError, match="has no cifar-10-batches-py"):
        check_data(f"cifar10:{tmp_path / 'nothing'}")


def test_data_limit_keeps_every_class_in_proportion_and_the_same_images(tmp_path, monkeypatch):
    # a folder read class by class (a: 30, b: 20, c: 10 images): the first N would be class a only
    monkeypatch.setenv("HWNAS_CACHE", str(tmp_path / "cache"))
    for c, n in (("a", 30), ("b", 20), ("c", 10)):
        for i in range(n):   # distinct images: the same subset twice is the same images
            for split in ("train", "test"):
                _image(tmp_path / "data" / split / c / f"{i}.png", "abc".index(c), fill=i)
    task = load_task(str(tmp_path / "data"), limit=12)
    for split in (task.train, task.val, task.test):
        counts = torch.bincount(split[1], minlength=3).tolist()
        assert len(split[1]) <= 12 and all(counts), counts      # every class kept
    assert torch.bincount(task.test[1], minlength=3).tolist() == [6, 4, 2]   # in proportion 3:2:1
    again = load_task(str(tmp_path / "data"), limit=12)
    assert torch.equal(again.train[0], task.train[0]) and torch.equal(again.test[1], task.test[1])


def numbered_task(n_train=60, n_held=20):
    """A task whose every image carries its own id in its pixels, so splits can be compared by identity."""
    from searchers.data import Task

    def split(start, n):
        ids = torch.arange(start, start + n)
        x = torch.stack([ids // 256, ids % 256, ids * 0], 1).to(torch.uint8).view(n, 3, 1, 1).expand(n, 3, 4, 4)
        return x.contiguous(), ids % 3
    return Task("numbered", split(0, n_train), split(n_train, n_held), split(n_train + n_held, n_held), 3,
                (0.5,) * 3, (0.5,) * 3)


def image_ids(split) -> set[int]:
    x = split[0].long()
    return set((x[:, 0, 0, 0] * 256 + x[:, 1, 0, 0]).tolist())


def test_arch_split_is_disjoint_from_weights_val_and_test():
    """Bilevel methods step architecture parameters on part of the training split, never on val / test."""
    from searchers.data import arch_split

    task = numbered_task()
    w, a = arch_split(task)
    ids_w, ids_a = image_ids(w.train), image_ids(a.train)
    held = image_ids(task.val) | image_ids(task.test)
    assert ids_w and ids_a and not ids_w & ids_a and ids_w | ids_a == image_ids(task.train)
    assert not (ids_w | ids_a) & held
    assert w.val is task.val and a.test is task.test       # scored on the task's own held-out splits
    assert image_ids(arch_split(task)[1].train) == ids_a   # fixed: the same parts every time
    assert sorted(a.train[1].tolist()).count(0) == 10      # stratified: half of every class
