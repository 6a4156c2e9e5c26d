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
