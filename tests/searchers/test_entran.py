"""EnTranNAS-DST on a tiny cell network (16x16 digits, C = 4, 3 cells of 2 nodes, three operators for
speed: skip, sep3, max3), 3 epochs."""
import io

import pytest
import torch

from searchers import RunSettings, UsageError, load_model, load_task
from searchers.entran import EnTranNAS, Params
from searchers.spaces import parse_arch
from searchers.spaces.cells import CellArch

TINY = dict(channels=4, cells=3, steps=2, lr_arch=0.05, ops="skip,sep3,max3")
EPOCHS = 3


def first(task, n: int):
    """The first n images of every split: the data these tests' runs were checked on (--data-limit
    draws a stratified subset instead, on which 3 epochs at lam 1.0 happen not to cut connections)."""
    cut = lambda split: (split[0][:n], split[1][:n])
    task.train, task.val, task.test = cut(task.train), cut(task.val), cut(task.test)
    return task


def make(lam: float = 0.1, seed: int = 0, epochs: int = EPOCHS) -> EnTranNAS:
    task = first(load_task("digits", image_size=16), 256)
    return EnTranNAS(Params(lam=lam, **TINY), task, RunSettings(epochs=epochs, seed=seed, batch_size=32))


def run(s: EnTranNAS) -> EnTranNAS:
    while s.epoch < s.settings.epochs:
        s.step()
    return s


@pytest.fixture(scope="module")
def searched():
    return run(make())


def connections(s: EnTranNAS) -> dict:
    """The (src, op) connections with q > 0 of each node, per cell type, read off the search network."""
    with torch.no_grad():
        return {k: [{(src, op) for src, op, _, _ in node} for node in s.net.plan(s.net.q(k))]
                for k in ("normal", "reduce")}


def test_every_node_keeps_an_input_even_at_extreme_thresholds(searched):
    net = make(epochs=1).net
    with torch.no_grad():
        for b in net.beta.values():
            b.fill_(50.0)  # t(j) -> 1: only each node's strongest connection may survive (Eq. 8)
        for a in net.alpha.values():
            a.normal_()
    for kind in ("normal", "reduce"):
        q = net.q(kind)
        for node in net.plan(q):
            assert len(node) == 1
    arch = net.arch()
    assert all(len(n) == 1 for c in arch.cells for n in c.nodes)
    for h in searched.history:
        assert all(len(n) >= 1 for c in CellArch.parse(h.arch).cells for n in c.nodes)


def test_derived_architecture_is_the_nonzero_connections(searched):
    arch, conn = searched.net.arch(), connections(searched)
    for cell in arch.cells:
        kind = "reduce" if cell.reduction else "normal"
        assert [{(e.src, e.op) for e in node} for node in cell.nodes] == conn[kind]
    assert arch.shared  # feature sharing: one operator module per source node


def test_child_reproduces_search_logits(searched):
    arch, child = searched.net.export()
    x, _ = next(searched.task.batches("val", 64))
    searched.net.eval()
    with torch.no_grad():
        assert torch.allclose(searched.net(x), child(x), atol=1e-4)
    # the delivered child (best val epoch) is the search network of that epoch
    arch, best = searched.derive()
    assert str(arch) == searched.best["arch"]
    assert searched.task.accuracy(best, "val") == searched.best["val_acc"]
    with torch.no_grad():
        assert torch.allclose(searched.search_logits(x), best(x), atol=1e-4)


def test_arch_string_round_trips(searched):
    for h in searched.history:
        arch = parse_arch("cells", h.arch)
        assert str(arch) == h.arch and CellArch.parse(h.arch) == arch
        assert h.flops == arch.flops()


def test_larger_lambda_raises_thresholds_and_sparsifies(searched):
    sparse = run(make(lam=1.0))
    t = lambda s: torch.cat([torch.sigmoid(b) for b in s.net.beta.values()]).mean().item()
    n = lambda s: sum(len(node) for nodes in connections(s).values() for node in nodes)
    assert t(sparse) > t(searched)
    assert n(sparse) <= n(searched)
    assert n(sparse) < 2 * 5 * 3  # connections were cut (all 2 x 5 edges x 3 ops at start)


def test_checkpoint_restore_and_seed(searched):
    first = make()
    first.step()
    assert first.history[0].loss == searched.history[0].loss  # same seed, same first epoch
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    buf.seek(0)
    resumed = make()
    resumed.load_state_dict(torch.load(buf, weights_only=False))
    run(resumed)
    assert [h.loss for h in resumed.history] == [h.loss for h in searched.history]
    assert [h.arch for h in resumed.history] == [h.arch for h in searched.history]
    a, b = resumed.net.state_dict(), searched.net.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    other = make(seed=1, epochs=1)
    assert other.step().loss != searched.history[0].loss


def test_finish_saves_a_loadable_child(searched, tmp_path):
    result = searched.finish()
    arch = parse_arch("cells", result.arch)
    assert result.flops == arch.flops() and result.runtime_ms is None
    assert result.extra["best_epoch"] >= 1
    paths = result.save(tmp_path)
    assert paths["onnx"].stat().st_size > 0
    _, loaded = load_model(paths["model"])
    x, _ = next(searched.task.batches("val", 32))
    with torch.no_grad():
        assert torch.equal(loaded(x), result.model.eval()(x))


@pytest.mark.parametrize("bad", [dict(lam=-0.1), dict(ops="skip,conv7"), dict(ops=""), dict(ops="skip,skip"),
                                 dict(tau0=0.0), dict(tau_decay=1.5), dict(steps=0), dict(arch_beta2=1.0)])
def test_invalid_params_are_refused(bad):
    with pytest.raises(UsageError):
        Params(**bad)
