"""GOLD-NAS on a tiny cell network (16x16 digits, C = 6, 3 cells of 2 nodes), a few seconds a search."""
import io

import pytest
import torch

from searchers import RunSettings, UsageError, load_model, load_task
from searchers.gold import GoldNAS, Params, prune
from searchers.spaces import parse_arch
from searchers.spaces.cells import CellArch

EPOCHS = 10
BS = 32
LIMIT = 384
TINY = dict(channels=6, cells=3, steps=2, lr_w=0.1, lam0=0.02, n0=4)


def make(mu: float, seed: int = 0, epochs: int | None = None, **kw) -> GoldNAS:
    task = load_task("digits", limit=LIMIT, image_size=16)
    settings = RunSettings(epochs=epochs or EPOCHS, seed=seed, batch_size=BS)
    return GoldNAS(Params(mu=mu, **{**TINY, **kw}), task, settings)


def run(s: GoldNAS) -> GoldNAS:
    while s.epoch < s.settings.epochs:
        s.step()
    return s


@pytest.fixture(scope="module")
def mu0():
    return run(make(0.0))


@pytest.fixture(scope="module")
def mu1():
    return run(make(1.0))


def test_prune_keeps_an_input_for_every_node():
    # node 0: every operator below xi_min; node 1: one weak operator among strong ones;
    # node 2: both operators between xi_min and xi_max and among the n0 weakest.
    w = torch.tensor([0.001, 0.002, 0.003, 0.02, 0.9, 0.8, 0.03, 0.04])
    node = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2])
    active = torch.ones(8, dtype=torch.bool)
    new, n = prune(w, active, node, n0=6, xi_max=0.05, xi_min=0.01)
    assert new.tolist() == [False, False, True, False, True, True, False, True]
    assert n == 4
    for k in range(3):
        assert new[node == k].any()
    # already-pruned operators are ignored, and a node that is down to one stays so
    new2, n2 = prune(torch.zeros(8), new, node, n0=8, xi_max=0.05, xi_min=0.01)
    assert n2 == 1 and new2.tolist() == [False, False, True, False, False, True, False, True]


def test_prune_respects_thresholds_and_pace():
    w = torch.tensor([0.04, 0.03, 0.02, 0.045, 0.2])
    node = torch.zeros(5, dtype=torch.long)
    new, n = prune(w, torch.ones(5, dtype=torch.bool), node, n0=2, xi_max=0.05, xi_min=0.01)
    assert n == 2 and new.tolist() == [True, False, False, True, True]  # only the n0 weakest below xi_max


def test_one_search_gives_a_pareto_front(mu0):
    front = mu0.extra_result()["pareto"]
    assert len(front) >= 3
    flops = [m["flops"] for m in front]
    assert all(a > b for a, b in zip(flops, flops[1:]))
    for m in front:
        arch = parse_arch("cells", m["arch"])
        assert arch.flops() == m["flops"] and m["params"] > 0


def test_mu_pushes_toward_cheaper_networks(mu0, mu1):
    assert mu1.history[-1].flops < mu0.history[-1].flops


def test_no_node_loses_its_inputs(mu0, mu1):
    for s in (mu0, mu1):
        per_node = torch.bincount(s.net.node_id[s.net.active], minlength=s.net.num_nodes)
        assert (per_node >= 1).all()
        for h in s.history:
            arch = CellArch.parse(h.arch)  # Cell validation refuses a node without inputs
            assert all(len(node) >= 1 for cell in arch.cells for node in cell.nodes)


def test_child_reproduces_search_logits(mu1):
    arch, child = mu1.net.export()
    x, _ = next(mu1.task.batches("val", 64))
    mu1.net.eval()
    with torch.no_grad():
        assert torch.allclose(mu1.net(x), child(x), atol=1e-4)
    assert sum(1 for _ in child.modules()) < sum(1 for _ in mu1.net.modules())  # pruned ops are gone
    # the stored Pareto children are the search network of their epoch: same val accuracy
    arch, chosen = mu1.derive()
    member = mu1.pareto[mu1.chosen()]
    assert str(arch) == member["arch"]
    assert mu1.task.accuracy(chosen, "val") == member["val_acc"]


def test_arch_string_round_trips(mu0):
    for h in mu0.history:
        arch = parse_arch("cells", h.arch)
        assert str(arch) == h.arch and CellArch.parse(str(arch)) == arch


def test_deliverable_follows_the_target(mu0):
    front = mu0.pareto
    cheapest = min(range(len(front)), key=lambda i: front[i]["flops"])
    tiny = GoldNAS.make_params(**{**TINY, "target_mflops": 1e-9})
    huge = GoldNAS.make_params(**{**TINY, "target_mflops": 1e9})
    try:
        mu0.params = tiny
        assert mu0.chosen() == cheapest
        mu0.params = huge
        best = max(m["val_acc"] for m in front)
        assert front[mu0.chosen()]["val_acc"] == best
    finally:
        mu0.params = Params(mu=0.0, **TINY)
    best = max(m["val_acc"] for m in front)
    pick = front[mu0.chosen()]
    assert pick["val_acc"] >= best - mu0.params.acc_tolerance
    assert all(m["flops"] >= pick["flops"] for m in front if m["val_acc"] >= best - mu0.params.acc_tolerance)


def test_checkpoint_restore_and_seed(mu1):
    first = make(1.0)
    for _ in range(4):
        first.step()
    # same seed, same first epochs
    assert [h.loss for h in first.history] == [h.loss for h in mu1.history[:4]]
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    buf.seek(0)
    resumed = make(1.0)
    resumed.load_state_dict(torch.load(buf, weights_only=False))
    run(resumed)
    assert [h.loss for h in resumed.history] == [h.loss for h in mu1.history]
    assert [h.arch for h in resumed.history] == [h.arch for h in mu1.history]
    a, b = resumed.net.state_dict(), mu1.net.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.extra_result() == mu1.extra_result()
    other = make(1.0, seed=1, epochs=1)
    assert other.step().loss != mu1.history[0].loss


def test_finish_saves_a_loadable_child(mu1, tmp_path):
    result = mu1.finish()
    arch = parse_arch("cells", result.arch)
    assert result.flops == arch.flops() and result.runtime_ms is None
    assert result.params == sum(p.numel() for p in arch.build().parameters())
    assert result.extra["pareto"] and result.extra["chosen"] is not None
    result.save(tmp_path, onnx=False)
    _, loaded = load_model(tmp_path / "model.pt")
    x, _ = next(mu1.task.batches("val", 32))
    with torch.no_grad():
        assert torch.equal(loaded(x), result.model.eval()(x))


@pytest.mark.parametrize("bad", [dict(mu=-1.0), dict(xi_min=0.1, xi_max=0.05), dict(n0=0), dict(c0=1.0),
                                 dict(flops_min=1.5), dict(target_mflops=0.0), dict(cells=2)])
def test_invalid_params_are_refused(bad):
    with pytest.raises(UsageError):
        Params(**bad)
