import pytest
import torch

from searchers import RunSettings, get_searcher
from searchers.cost import exact_runtime
from searchers.errors import UsageError
from searchers.multi_path import CANDIDATES

SETTINGS = RunSettings(epochs=3, seed=0, batch_size=32, width=0.25)
C = {str(b): k for k, b in enumerate(CANDIDATES)}  # candidate index by name: k3e3, k5e6se0.25, skip, ...
PATH = [C[n] for n in ("k5e6 skip k3e3 k5e3se0.5 k3e6 skip skip k5e6se0.25 k5e3 k3e3 k3e6se0.5 skip k3e3 skip "
                       "k5e3 k5e6 k3e6 k5e3se0.25 skip k3e3").split()]  # layers 0, 4, 8, ... are not skippable


def make(task, **kw):
    cls = get_searcher("multi-path")
    return cls(cls.make_params(**kw), task, SETTINGS)


def force(net, path, big=50.0):
    """alpha so that path k of each layer has weight ~1 and the others ~0 (sigmoid and softmax alike)."""
    with torch.no_grad():
        net.alpha.fill_(-big)
        net.alpha[torch.arange(len(path)), torch.tensor(path)] = big


@pytest.mark.parametrize("weighting", ["sigmoid", "softmax"])
def test_path_weights(tiny, weighting):
    net = make(tiny, weighting=weighting).net
    with torch.no_grad():
        net.alpha.normal_()
    w = net.path_weights()
    assert (w[~net.valid] == 0).all()
    if weighting == "softmax":
        torch.testing.assert_close(w.sum(-1), torch.ones(20))
    else:  # independent gates: sigmoid(alpha), need not sum to 1
        torch.testing.assert_close(w[net.valid], torch.sigmoid(net.alpha)[net.valid])
        assert not torch.allclose(w.sum(-1), torch.ones(20))


@pytest.mark.parametrize("weighting", ["sigmoid", "softmax"])
def test_weighted_sum_of_all_paths(tiny, weighting):
    """Eq. 6: with the weights saturated on one path per layer, the supernet is that child."""
    net = make(tiny, weighting=weighting).net.train()  # batch statistics: fresh running stats would
    net.head.dropout.p = 0.0                               # shrink the features to nothing
    x = next(tiny.batches("test", 8))[0]
    force(net, PATH)
    with torch.no_grad():
        torch.testing.assert_close(net(x), net.run_path(x, PATH), atol=1e-4, rtol=1e-4)
        net.alpha.zero_()  # unsaturated: every path contributes, the output differs from any child
        assert not torch.allclose(net(x), net.run_path(x, PATH), rtol=1e-2, atol=1e-3)


def test_bilevel_steps_touch_only_their_own_parameters(tiny):
    s = make(tiny, lam=0.1)
    x, y = next(tiny.batches("train", 32))
    xv, yv = next(tiny.batches("val", 32))
    alpha = s.net.alpha.detach().clone()
    weights = [p.detach().clone() for p in s.weights]
    s.weight_step(x, y)
    assert torch.equal(s.net.alpha, alpha) and s.net.alpha.grad is None
    changed = [p.detach().clone() for p in s.weights]
    assert any(not torch.equal(a, b) for a, b in zip(changed, weights))
    s.opt.zero_grad(set_to_none=True)
    s.arch_step(xv, yv, lam=0.1)
    assert not torch.equal(s.net.alpha, alpha)
    assert all(torch.equal(a, b) for a, b in zip(s.weights, changed))
    assert all(p.grad is None for p in s.weights)  # the alpha step computes no weight gradients


def test_runtime_term_is_the_expected_runtime(tiny):
    s = make(tiny, weighting="softmax", lam=1.0)
    force(s.net, PATH)
    arch = s.net.arch(PATH)
    torch.testing.assert_close(s.expected_runtime().item(), exact_runtime(s.profile, arch), rtol=1e-5, atol=1e-3)
    # the lambda * log R gradient lowers costly paths' logits: d log R / d alpha sign at one layer
    s.net.alpha.data.zero_()
    torch.log(s.expected_runtime()).backward()
    g = s.net.alpha.grad[1]  # a skippable layer
    assert g[C["k5e6"]] > g[C["k3e3"]] and g[C["skip"]] < 0 < g[C["k5e6"]]


def test_derive_takes_the_argmax_path_with_its_weights(tiny):
    s = make(tiny)
    force(s.net, PATH)
    arch, child = s.derive()
    assert arch.blocks == tuple(CANDIDATES[k] for k in PATH)
    for spec, cands, k in zip(s.net.specs, s.net.choices(), PATH):
        name = str(spec.index)
        if CANDIDATES[k].skip:
            assert name not in child.layers
            continue
        for key, v in cands[k].state_dict().items():
            assert torch.equal(child.layers[name].state_dict()[key], v), (name, key)
    assert s.search_logits(next(tiny.batches("test", 4))[0]) is None  # the child is not the supernet


def test_short_search_then_finetune_on_the_child(digits):
    from automl.testing.searchers import tiny_task

    s = make(tiny_task(digits, 64), warmup_epochs=1, finetune_epochs=1)
    r = s.run()
    assert [h.extra["phase"] for h in r.history] == ["warmup", "search", "finetune"]
    assert s.net.frozen == s.net.argmax_path() and r.arch == str(s.net.arch(s.net.frozen))


def test_bad_params_are_refused():
    cls = get_searcher("multi-path")
    with pytest.raises(UsageError, match="valid choices"):
        cls.make_params(weighting="gumbel")
    with pytest.raises(UsageError, match="lam"):
        cls.make_params(lam=-0.1)
    with pytest.raises(UsageError, match="arch_lr"):
        cls.make_params(arch_lr=0.0)
