import math

import pytest
import torch

from searchers import RunSettings, get_searcher
from searchers.errors import UsageError
from searchers.single_path import SuperNet
from searchers.spaces.mbconv import Block, MBConvArch

VARIANTS = ["sigmoid", "ste", "softmax"]


def force(layer, block: Block):
    """Set a superkernel layer's architecture parameters so its decisions name `block`."""
    with torch.no_grad():
        if layer.variant == "softmax":
            for tau in (layer.tau_k, layer.tau_e, layer.tau_se):
                tau.zero_()
            layer.tau_k[1 if block.kernel == 5 else 0] = 5.0
            if block.skip:
                layer.tau_e[0] = 5.0
            else:
                layer.tau_e[-1 if block.expansion == 6 else -2] = 5.0
            layer.tau_se[{0.0: 0, 0.25: 1, 0.5: 2}[block.se]] = 5.0
            return
        big = 1e6  # a threshold above any norm turns the indicator off
        layer.set_threshold_units()   # thresholds are in units of the subset norms (Eq. 2-4: t = unit * t_)
        layer.t_k5.fill_(0.0 if block.kernel == 5 else big)
        layer.t_e6.fill_(0.0 if block.expansion == 6 else big)
        layer.t_se25.fill_(0.0 if block.se else big)
        layer.t_se50.fill_(0.0 if block.se == 0.5 else big)
        if layer.spec.skippable:
            layer.t_e3.fill_(big if block.skip else 0.0)


def random_blocks(seed: int):
    g = torch.Generator().manual_seed(seed)
    blocks = []
    for i in range(20):
        r = lambda n: int(torch.randint(n, (1,), generator=g))
        if i % 4 and r(4) == 0:
            blocks.append(Block(skip=True))
        else:
            blocks.append(Block([3, 5][r(2)], [3, 6][r(2)], [0.0, 0.25, 0.5][r(3)]))
    return blocks


@pytest.mark.parametrize("variant", VARIANTS)
def test_decisions_decode_to_the_mbconv_they_name(variant):
    net = SuperNet(0.25, 32, 10, variant)
    blocks = random_blocks(1)
    for layer, b in zip(net.searchable(), blocks):
        force(layer, b)
    assert net.arch().blocks == tuple(blocks)
    # and every single choice on one layer
    layer = net.searchable()[1]
    for b in [Block(3, 3, 0.0), Block(5, 3, 0.25), Block(3, 6, 0.5), Block(5, 6, 0.0), Block(skip=True)]:
        force(layer, b)
        assert layer.block() == b


def plain_decisions(layer, variant):
    """Eq. 2-4 for one layer written out with plain norms, the way the layer-by-layer code computed them."""
    from searchers.spaces.superkernel import indicator

    w, ring, u, s = layer.dw.weight, layer.ring, layer.t_unit, layer.se_reduce.weight
    d_k5 = indicator((w * ring).norm() - u[0] * layer.t_k5, variant)
    wk = w * (1 - ring) + w * ring * d_k5
    n_e3, n_e6 = wk[: layer.half].norm(), wk[layer.half:].norm()
    one = torch.ones(())
    return torch.stack([d_k5, indicator(n_e6 - u[1] * layer.t_e6, variant),
                        indicator(n_e3 - u[2] * layer.t_e3, variant) if layer.spec.skippable else one,
                        indicator(s[: layer.se_q].norm() - u[3] * layer.t_se25, variant),
                        indicator(s[layer.se_q:].norm() - u[4] * layer.t_se50, variant)])


@pytest.mark.parametrize("variant", ["sigmoid", "ste"])
def test_all_layer_decisions_equal_eq_2_to_4_layer_by_layer(variant):
    """The supernet computes every layer's decisions in one go (DecisionLayout); values and gradients equal
    the plain per-layer Eq. 2-4, at thresholds where decisions are on and off."""
    torch.manual_seed(0)
    net = SuperNet(0.25, 32, 10, variant)
    for i, layer in enumerate(net.searchable()):
        layer.set_threshold_units()
        with torch.no_grad():
            for j, name in enumerate(("t_k5", "t_e6", "t_e3", "t_se25", "t_se50")):
                if hasattr(layer, name):
                    getattr(layer, name).fill_(0.7 + 0.2 * ((i + j) % 3))   # 0.7, 0.9, 1.1 of the unit
    params = [p for p in net.parameters() if p.requires_grad]
    fast = net.decisions()
    plain = torch.stack([plain_decisions(m, variant) for m in net.searchable()])
    assert torch.equal(fast.detach().round(), plain.detach().round()) and 0 < fast.sum() < fast.numel()
    torch.testing.assert_close(fast, plain)   # hard + soft - soft: 1 up to the soft part's rounding
    probe = torch.randn(fast.shape, generator=torch.Generator().manual_seed(1))
    g_fast = torch.autograd.grad((fast * probe).sum(), params, allow_unused=True)
    g_plain = torch.autograd.grad((plain * probe).sum(), params, allow_unused=True)
    for a, b in zip(g_fast, g_plain):
        assert (a is None) == (b is None) or (a if b is None else b).abs().max() == 0
        if a is not None and b is not None:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("variant", VARIANTS)
def test_child_reproduces_supernet_logits(variant, digits):
    torch.manual_seed(0)
    net = SuperNet(0.25, 32, 10, variant)
    for layer, b in zip(net.searchable(), random_blocks(2)):
        force(layer, b)
    net.train()
    with torch.no_grad():  # a few BN updates so running statistics are not the identity
        for x, _ in digits.batches("train", 64):
            net(x)
    net.eval()
    x = next(digits.batches("test", 32))[0]
    arch, child = net.extract()
    assert str(arch) == str(net.arch())
    with torch.no_grad():
        torch.testing.assert_close(child.eval()(x), net(x), atol=1e-4, rtol=1e-4)
    n_child = sum(p.numel() for p in child.parameters())
    assert n_child < sum(p.numel() for p in net.parameters())


def test_runtime_decreases_as_lambda_grows(digits):
    from automl.testing.searchers import tiny_task

    task = tiny_task(digits, 256)
    cls = get_searcher("single-path")
    runtimes = []
    for lam in (0.0, 0.3, 3.0):
        # defaults: the threshold step is per epoch, so 8 steps an epoch still move decisions
        params = cls.make_params(lam=lam)
        s = cls(params, task, RunSettings(epochs=3, seed=0, batch_size=32, width=0.25))
        runtimes.append(s.run().runtime_ms)
    assert runtimes[0] > runtimes[1] > runtimes[2], runtimes


def test_bad_params_are_refused():
    cls = get_searcher("single-path")
    with pytest.raises(UsageError, match="valid choices"):
        cls.make_params(variant="gumbel")
    with pytest.raises(UsageError, match="lam"):
        cls.make_params(lam=-1.0)
    with pytest.raises(UsageError, match="valid choices"):
        cls.make_params(lambda_=0.1)
    with pytest.raises(UsageError, match="epochs"):
        RunSettings(epochs=0)


def test_nan_loss_stops_with_clear_error(tiny):
    from searchers.errors import DivergedError

    cls = get_searcher("single-path")
    s = cls(cls.make_params(lam=0.1, lr=1e30, warmup_epochs=0), tiny, RunSettings(epochs=3, batch_size=32, width=0.25))
    with pytest.raises(DivergedError, match="diverged"):
        s.run()


def test_softmax_logits_step_on_training_data_only(tiny):
    """The softmax variant is bilevel: its logits step on a half of the training split (data.arch_split),
    never on val (which scores Eq. 19) or test."""
    from automl.testing.searchers import held_out_never_trained, make

    s = make("single-path", tiny, params={"variant": "softmax"})
    assert s.a_task.train[1].numel() + s.w_task.train[1].numel() == tiny.train[1].numel()
    held_out_never_trained("single-path", tiny, params={"variant": "softmax"})


def test_weights_only_masking_leaks_until_the_architecture_is_frozen(digits):
    """--mask weights: Eq. 2-4 literally. With every decision on it is the default supernet; with some
    off, biases leak through the zeroed weights, so the net is not its child; frozen (fine-tuning) it is."""
    torch.manual_seed(0)
    gated = SuperNet(0.25, 32, 10, "sigmoid")
    with torch.no_grad():  # trained-looking BN: biases that can leak, residual branches switched on
        for m in gated.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.5)
        for xb, _ in digits.batches("train", 64):
            gated(xb)
    literal = SuperNet(0.25, 32, 10, "sigmoid", mask="weights")
    literal.load_state_dict(gated.state_dict())
    x = next(digits.batches("test", 8))[0]
    for net in (gated, literal):
        net.eval()
    with torch.no_grad():
        torch.testing.assert_close(literal(x), gated(x))  # all decisions on (thresholds at 0): no difference
        for net in (gated, literal):
            for layer, b in zip(net.searchable(), random_blocks(2)):
                force(layer, b)
        _, child = literal.extract()
        assert not torch.allclose(literal(x), child.eval()(x), atol=1e-3)
        torch.testing.assert_close(gated(x), child(x), atol=1e-4, rtol=1e-4)
        for m in literal.searchable():
            m.frozen = m.block()
        torch.testing.assert_close(literal(x), child(x), atol=1e-4, rtol=1e-4)


def test_weights_only_search_delivers_its_finetuned_child(tiny):
    cls = get_searcher("single-path")
    s = cls(cls.make_params(lam=0.5, mask="weights"), tiny, RunSettings(epochs=3, batch_size=32, width=0.25))
    assert s.search_logits(tiny.test[0][:1].float()) is None  # searching: the child is not the supernet
    r = s.run()
    assert [h.extra["phase"] for h in r.history] == ["warmup", "search", "finetune"]
    x = next(tiny.batches("test", 16))[0]
    torch.testing.assert_close(r.model.eval()(x), s.search_logits(x), atol=1e-4, rtol=1e-4)
    with pytest.raises(UsageError, match="valid choices"):
        cls.make_params(mask="outputs")
