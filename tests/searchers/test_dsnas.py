import pytest
import torch
import torch.nn.functional as F

from automl.testing.searchers import tiny_task
from searchers import RunSettings, get_searcher
from searchers.errors import UsageError
from searchers.multi_path import CANDIDATES

SETTINGS = RunSettings(epochs=3, seed=0, batch_size=32, width=0.25)
C = {str(b): k for k, b in enumerate(CANDIDATES)}  # candidate index by name: k3e3, k5e6se0.25, skip, ...


def make(task, settings=SETTINGS, **kw):
    cls = get_searcher("dsnas")
    return cls(cls.make_params(**kw), task, settings)


def batch(task, n=32):
    x, y = next(task.batches("train", n))
    return x.contiguous(memory_format=torch.channels_last), y


def test_layers_fix_progressively_and_all_with_small_h(digits):
    s = make(tiny_task(digits, 128), RunSettings(epochs=6, seed=0, batch_size=32, width=0.25), h=0.03,
             finetune_epochs=0)
    r = s.run()
    fixed = [h.extra["fixed_layers"] for h in r.history]
    assert fixed == sorted(fixed), fixed  # never decreases
    assert fixed[-1] == 20, fixed
    assert s.net.path() == s.net.fixed  # the derived child is the fixed ops
    assert all(s.sample() == s.net.fixed for _ in range(5))  # fixed layers are no longer sampled


def test_a_fixed_layer_keeps_its_op_and_alpha(tiny):
    s = make(tiny)
    s.net.fix(4, 2)
    alpha = s.net.alpha.detach().clone()
    for _ in range(3):
        assert s.sample()[4] == 2
        s.search_step(*batch(tiny))
    assert torch.equal(s.net.alpha[4], alpha[4]) and not torch.equal(s.net.alpha, alpha)


def test_only_the_sampled_path_runs(tiny):
    s = make(tiny, resource=0.01)
    path = [C["k5e6"], C["skip"], C["k3e3se0.25"], C["k5e3se0.5"]] * 5  # skip only where allowed
    called = set()
    for i, cands in enumerate(s.net.choices()):
        for k, op in enumerate(cands):
            op.register_forward_hook(lambda *_, key=(i, k): called.add(key))
    s.search_step(*batch(tiny), path=path)
    assert called == {(i, k) for i, k in enumerate(path)}
    for i, cands in enumerate(s.net.choices()):  # unsampled candidates got no gradient, so no update
        for k, op in enumerate(cands):
            grads = [p.grad for p in op.parameters()]
            assert all(g is None for g in grads) or k == path[i], (i, k)


def test_samples_are_one_hot_and_respect_the_space(tiny):
    s = make(tiny)
    for _ in range(20):
        z = F.one_hot(torch.tensor(s.sample()), len(CANDIDATES))
        assert (z.sum(-1) == 1).all()
        assert not (z.bool() & ~s.net.valid).any()  # never skip the first layer of a stage
    with torch.no_grad():
        s.net.alpha[2, C["k3e6"]] = 50.0  # p(k3e6) ~ 1 at layer 2
    assert all(s.sample()[2] == C["k3e6"] for _ in range(10))


def dummy_and_explicit_grads(s, x, y, path, layer):
    """alpha.grad[layer] from the searcher's dummy-1 backward, and the explicit parts of Eq. 5-6: the
    credit dL/dx_j . x_j of the sampled op's output (CE only) and grad_alpha log p(Z) = onehot - p."""
    s.net.head.dropout.p = 0.0  # the same loss in both passes
    s.net.train()
    s.net.alpha.grad = None
    s.search_backward(x, y, path)
    got = s.net.alpha.grad[layer].clone()
    out = {}
    hook = s.net.choices()[layer][path[layer]].register_forward_hook(lambda m, i, o: out.update(x=o))
    ce = F.cross_entropy(s.net.run_path(x, path), y)  # no dummies: the plain child
    hook.remove()
    credit = (torch.autograd.grad(ce, out["x"])[0] * out["x"]).sum()  # Eq. 6: dL/dx_j^i . x_j^i
    p = s.net.masked_alpha().detach().softmax(-1)[layer]
    grad_logp = F.one_hot(torch.tensor(path[layer]), len(CANDIDATES)).float() - p
    return got, credit, grad_logp


def test_dummy_gradient_is_dl_dz_times_grad_log_p(tiny):
    s = make(tiny, resource=0.0)
    x, y = batch(tiny)
    path = s.sample()
    for layer in (0, 7, 19):
        got, credit, grad_logp = dummy_and_explicit_grads(s, x, y, path, layer)
        torch.testing.assert_close(got, credit * grad_logp, atol=1e-6, rtol=1e-4)


def test_runtime_credit_pushes_alpha_away_from_costly_ops(tiny):
    x, y = batch(tiny)
    torch.manual_seed(0)
    plain = make(tiny, resource=0.0)
    costly = make(tiny, resource=0.5)
    costly.net.load_state_dict(plain.net.state_dict())
    k = C["k5e6se0.5"]
    path = [k] * 20  # k5e6se0.5 everywhere: the most expensive op of every layer
    g0, _, grad_logp = dummy_and_explicit_grads(plain, x, y, path, 5)
    g1, _, _ = dummy_and_explicit_grads(costly, x, y, path, 5)
    r_layer = costly.r_table[5, k]
    runtime = costly.r_const + costly.r_table[torch.arange(20), torch.tensor(path)].sum()
    # d(resource * log R)/dZ^s = resource * R_s / R, times grad log p (Eq. 5-6)
    torch.testing.assert_close(g1 - g0, 0.5 * r_layer / runtime * grad_logp, atol=1e-6, rtol=1e-4)
    others = costly.net.valid[5].clone()
    others[k] = False
    assert (g1 - g0)[k] > 0 and ((g1 - g0)[others] < 0).all()  # descent lowers k5e6se0.5, raises the others
    # with a target above the path's runtime the hinge is off: no runtime credit at all
    hinge = make(tiny, resource=0.5, hinge_ms=1e4)
    hinge.net.load_state_dict(plain.net.state_dict())
    g2, _, _ = dummy_and_explicit_grads(hinge, x, y, path, 5)
    torch.testing.assert_close(g2, g0)


def test_larger_resource_ends_cheaper(digits):
    task = tiny_task(digits, 128)
    runtimes = [make(task, resource=r, h=0.5).run().runtime_ms for r in (0.0, 0.1)]
    assert runtimes[1] < runtimes[0], runtimes


def test_child_is_the_fixed_path_with_the_trained_weights(tiny):
    s = make(tiny, RunSettings(epochs=2, seed=0, batch_size=32, width=0.25))
    s.run()
    arch, child = s.derive()
    assert tuple(CANDIDATES[k] for k in s.net.path()) == arch.blocks
    x = batch(tiny, 16)[0]
    with torch.no_grad():
        torch.testing.assert_close(child.eval()(x), s.search_logits(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kw, match", [({"h": 0.0}, r"h must be in \(0, 1\)"), ({"h": 1.0}, r"\(0, 1\)"),
                                       ({"resource": -1.0}, "resource must be >= 0"),
                                       ({"hinge_ms": 0.0}, "hinge_ms"), ({"hh": 0.3}, "valid choices")])
def test_bad_params_are_refused(kw, match):
    with pytest.raises(UsageError, match=match):
        get_searcher("dsnas").make_params(**kw)
