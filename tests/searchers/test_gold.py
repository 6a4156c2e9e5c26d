"""GOLD-NAS on a tiny cell network (16x16 digits, C = 4, 3 cells of 2 nodes): about 0.3 s an epoch.

The search dynamics of so small a network are chaotic, so the searches below use fixed seeds (CPU runs
are deterministic): a 20-epoch search for the Pareto front, and 4-epoch searches, where mu = 1 has
pruned faster than mu = 0 on every seed tried (0-7), for the mu comparison and checkpointing.
(tests/conftest.py runs torch on one thread, so the trajectories do not depend on the core count.)
"""
import dataclasses
import io

import pytest
import torch

from searchers import RunSettings, UsageError, load_model, load_task
from searchers.gold import GoldNAS, Params, prune
from searchers.spaces import parse_arch
from searchers.spaces.cells import CellArch

TINY = dict(channels=4, cells=3, steps=2, lr_w=0.1, lam0=0.02, n0=8)
SHORT, LONG, PARETO_SEED = 4, 20, 1


def make(mu: float, seed: int = 0, epochs: int = SHORT, **kw) -> GoldNAS:
    task = load_task("digits", limit=256, image_size=16)
    return GoldNAS(Params(mu=mu, **{**TINY, **kw}), task, RunSettings(epochs=epochs, seed=seed, batch_size=32))


def run(s: GoldNAS) -> GoldNAS:
    while s.epoch < s.settings.epochs:
        s.step()
    return s


@pytest.fixture(scope="module")
def long():
    return run(make(0.0, seed=PARETO_SEED, epochs=LONG))


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


def test_prune_takes_the_n0_weakest_prunable_operators():
    """A node's last operator is never pruned, so it is not one of line 5's n0 weakest: the next weakest
    prunable one is pruned in its place, and Algorithm 1 then lowers lambda (n_pruned = n0)."""
    w = torch.tensor([0.001, 0.002, 0.02, 0.03, 0.9])
    node = torch.tensor([0, 1, 2, 2, 2])  # nodes 0 and 1 are down to one operator each
    new, n = prune(w, torch.ones(5, dtype=torch.bool), node, n0=2, xi_max=0.05, xi_min=0.01)
    assert n == 2 and new.tolist() == [True, True, False, False, True]
    new, n = prune(w, torch.ones(5, dtype=torch.bool), node, n0=1, xi_max=0.05, xi_min=0.01)
    assert n == 1 and new.tolist() == [True, True, False, True, True]


def test_prune_respects_thresholds_and_pace():
    w = torch.tensor([0.04, 0.03, 0.02, 0.045, 0.2])
    node = torch.zeros(5, dtype=torch.long)
    new, n = prune(w, torch.ones(5, dtype=torch.bool), node, n0=2, xi_max=0.05, xi_min=0.01)
    assert n == 2 and new.tolist() == [True, False, False, True, True]  # only the n0 weakest below xi_max


def test_one_search_gives_a_pareto_front(long):
    front = long.extra_result()["pareto"]
    assert len(front) >= 3
    flops = [m["flops"] for m in front]
    assert all(a > b for a, b in zip(flops, flops[1:]))
    for m in front:
        arch = parse_arch("cells", m["arch"])
        assert arch.flops() == m["flops"] and m["params"] > 0


def test_mu_pushes_toward_cheaper_networks(mu0, mu1):
    assert mu1.history[-1].flops < mu0.history[-1].flops


def test_no_node_loses_its_inputs(long, mu1):
    for s in (long, mu1):
        per_node = torch.bincount(s.net.node_id[s.net.active], minlength=s.net.num_nodes)
        assert (per_node >= 1).all()
        for h in s.history:
            arch = CellArch.parse(h.arch)  # Cell validation refuses a node without inputs
            assert all(len(node) >= 1 for cell in arch.cells for node in cell.nodes)


def test_child_reproduces_search_logits(long):
    arch, child = long.net.export()
    x, _ = next(long.task.batches("val", 64))
    long.net.eval()
    with torch.no_grad():
        assert torch.allclose(long.net(x), child(x), atol=1e-4)
    assert sum(p.numel() for p in child.parameters()) < sum(p.numel() for p in long.net.parameters()) / 2
    # every stored Pareto child is the search network of its epoch: same val accuracy
    for i, member in enumerate(long.pareto):
        arch, child = long.member_net(i).export()
        assert str(arch) == member["arch"]
        assert long.task.accuracy(child, "val") == member["val_acc"]
    arch, chosen = long.derive()
    assert str(arch) == long.pareto[long.chosen()]["arch"]
    with torch.no_grad():
        assert torch.allclose(long.search_logits(x), chosen(x), atol=1e-4)


def test_arch_string_round_trips(long):
    for h in long.history:
        arch = parse_arch("cells", h.arch)
        assert str(arch) == h.arch and CellArch.parse(str(arch)) == arch


def test_deliverable_follows_the_target(long):
    front, default = long.pareto, long.params
    best = max(m["val_acc"] for m in front)
    try:
        long.params = dataclasses.replace(default, target_mflops=1e-9)  # nothing fits: the cheapest
        assert front[long.chosen()]["flops"] == min(m["flops"] for m in front)
        long.params = dataclasses.replace(default, target_mflops=1e9)   # everything fits: the most accurate
        assert front[long.chosen()]["val_acc"] == best
    finally:
        long.params = default
    # default: the cheapest member within acc_tolerance of the best
    near = [m for m in front if m["val_acc"] >= best - default.acc_tolerance]
    assert front[long.chosen()]["flops"] == min(m["flops"] for m in near)


def test_checkpoint_restore_and_seed(mu1):
    first = make(1.0)
    for _ in range(2):
        first.step()
    # same seed, same first epochs
    assert [h.loss for h in first.history] == [h.loss for h in mu1.history[:2]]
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


def test_finish_saves_a_loadable_child(long, tmp_path):
    result = long.finish()
    arch = parse_arch("cells", result.arch)
    assert result.flops == arch.flops() and result.runtime_ms is None
    assert result.params == sum(p.numel() for p in arch.build().parameters())
    assert result.extra["pareto"] and result.extra["chosen"] is not None
    result.save(tmp_path, onnx=False)
    _, loaded = load_model(tmp_path / "model.pt")
    x, _ = next(long.task.batches("val", 32))
    with torch.no_grad():
        assert torch.equal(loaded(x), result.model.eval()(x))


@pytest.mark.parametrize("bad", [dict(mu=-1.0), dict(xi_min=0.1, xi_max=0.05), dict(n0=0), dict(c0=1.0),
                                 dict(flops_min=1.5), dict(target_mflops=0.0), dict(cells=2)])
def test_invalid_params_are_refused(bad):
    with pytest.raises(UsageError):
        Params(**bad)
