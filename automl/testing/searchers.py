"""Contract every registered searcher passes (run by tests/searchers/test_contract.py), on CPU at tiny
width: same seed => same result; per-epoch metrics present; checkpoint/restore equals an uninterrupted
run; the val and test splits are never trained on; the exported child reproduces the search network's eval-mode logits where the method claims it;
the saved model.pt reloads to the same logits."""
from __future__ import annotations

import copy
import io
import math
from unittest import mock

import torch

from searchers import RunSettings, get_searcher, load_model
from searchers.data import Task
from searchers.result import unpack_bits

# Tiny, fast settings per searcher (method knobs that keep a CPU test in seconds).
TINY_PARAMS = {
    "single-path": {"lam": 0.5},
    "random": {"n_samples": 2},
    "multi-path": {},
    "dsnas": {},
    "gold": {"cells": 3, "steps": 2},
    "entran": {"cells": 3, "steps": 2, "ops": "skip,sep3,max3"},
}
# Methods whose derived child is claimed to equal the search network (no retraining).
EXACT_CHILD = {"single-path", "dsnas", "entran", "gold", "random"}


def tiny_task(task: Task, n: int = 96) -> Task:
    cut = lambda s, k: (s[0][:k], s[1][:k])
    t = copy.copy(task)
    t.train, t.val, t.test = cut(task.train, n), cut(task.val, n // 2), cut(task.test, n // 2)
    return t


def settings(epochs: int = 2, seed: int = 0) -> RunSettings:
    return RunSettings(epochs=epochs, seed=seed, batch_size=32, width=0.25, target_ms=80.0)


def make(name: str, task: Task, epochs: int = 2, seed: int = 0, params: dict | None = None):
    cls = get_searcher(name)
    return cls(cls.make_params(**{**TINY_PARAMS.get(name, {}), **(params or {})}), task, settings(epochs, seed))


def same_seed_same_result(name: str, task: Task) -> None:
    a, b = make(name, task).run(), make(name, task).run()
    assert a.arch == b.arch and a.val_acc == b.val_acc and a.flops == b.flops
    assert [h.loss for h in a.history] == [h.loss for h in b.history]


def metrics_every_epoch(name: str, task: Task) -> None:
    seen = []
    r = make(name, task).run(seen.append)
    assert [m.epoch for m in seen] == [1, 2] == [h.epoch for h in r.history]
    for m in seen:
        assert math.isfinite(m.loss) and math.isfinite(m.ce) and 0 <= m.val_acc <= 1 and m.flops > 0 and m.arch
    # the declared capability is what studies ask before any work (a runtime target or not): it must be true
    measured = [m.runtime_ms is not None for m in seen] + [r.runtime_ms is not None]
    assert measured == [get_searcher(name).has_runtime_model] * 3, f"{name} declares has_runtime_model wrongly"


def checkpoint_restore(name: str, task: Task) -> None:
    full = make(name, task, epochs=3).run()
    s = make(name, task, epochs=3)
    s.step()
    # through a file, as the runners keep it: tensors and plain containers, loadable with weights_only
    buf = io.BytesIO()
    torch.save(s.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    torch.manual_seed(12345)  # disturb the global RNG: the state must carry it
    resumed = make(name, task, epochs=3)
    resumed.load_state_dict(state)
    r = resumed.run()
    assert r.arch == full.arch and r.val_acc == full.val_acc
    assert [h.loss for h in r.history] == [h.loss for h in full.history]


def child_reproduces_logits(name: str, task: Task, tmp_path) -> None:
    s = make(name, task)
    r = s.run()
    x = next(task.batches("test", 16))[0]
    child = r.model.eval()
    with torch.no_grad():
        got = child(x)
        ref = s.search_logits(x)
    if name in EXACT_CHILD:
        assert ref is not None, f"{name} claims its child reproduces the search network"
        torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)
    correct = unpack_bits(r.val_correct)   # per-image validation correctness, behind val_acc
    assert correct is not None and len(correct) == len(task.val[1]) and correct.sum() / len(correct) == r.val_acc
    r.save(tmp_path, onnx=False)
    arch, reloaded = load_model(tmp_path / "model.pt")
    assert str(arch) == r.arch
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), got, atol=1e-5, rtol=1e-5)


def held_out_never_trained(name: str, task: Task, params: dict | None = None) -> None:
    """No batch of val or test is drawn with autograd on: weights and architecture parameters (bilevel
    methods included: their architecture steps use part of the training split, data.arch_split) train
    only on training data; val scores the Eq. 19 reward and test reports the result."""
    drawn = []
    batches = Task.batches

    def spy(self, split, *args, **kwargs):
        for batch in batches(self, split, *args, **kwargs):
            drawn.append((split, torch.is_grad_enabled()))
            yield batch

    with mock.patch.object(Task, "batches", spy):
        make(name, task, params=params).run()
    assert any(split == "train" for split, _ in drawn)
    trained_on = sorted({split for split, grad in drawn if grad and split != "train"})
    assert not trained_on, f"{name} draws {trained_on} batches with autograd on (training on held-out data)"


CONTRACT = [same_seed_same_result, metrics_every_epoch, checkpoint_restore, held_out_never_trained]
