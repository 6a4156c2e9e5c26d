"""Cost models: profiles, exact and differentiable runtime (Eq. 11-17), FLOPs / params, device profiling."""
from __future__ import annotations

import dataclasses
import json
import random
from filecmp import cmp as cmp_files

import numpy as np
import pytest
import torch
from torch import nn

from searchers.base import RunSettings
from searchers.cost import (Cost, Indicators, MBConvDesc, NetDesc, Profile, count_flops, count_params,
                            differentiable_runtime, exact_cost, exact_runtime, hard_indicators, layer_runtime,
                            list_profiles, load_profile, net_counts, runtime_range)
from searchers.cost.runtime import network_runtime, stacked_tables
from searchers.cost.measure import probe_plan, profile_device, random_arch, validate
from searchers.cost.profiles import BUNDLED_DIR
from searchers.errors import UsageError
from searchers.spaces.mbconv import Block, MBConvArch

SP = "pixel1-single-path"
PX = "pixel1-proxylessnas-mobile"
CPU = "cpu-xeon-1thread"


# -- profiles and exact runtime --------------------------------------------------------------------
def test_bundled_profiles_listed_and_load():
    assert list_profiles() == [SP, PX, CPU]
    for name in list_profiles():
        p = load_profile(name)
        assert p.name == name and p.input_size == 224 and p.unit == "ms"
        assert sorted(p.tables) == list(range(1, 21))
    for name in (SP, PX):
        assert load_profile(name).se_factor(5, 3, 6) == 1.0  # neither Pixel 1 file has SE factors


def test_the_bundled_cpu_profile_prices_both_se_ratios():
    p = load_profile(CPU)
    assert len(p.se_factors) == len(p.se50_factors) == 80 and p.measured["validation"]["mae_pct"] > 0
    layer = p.block_ms(7, Block(5, 6, 0.0))
    assert p.block_ms(7, Block(5, 6, 0.25)) == pytest.approx(layer * p.se_factor(7, 5, 6, 0.25))
    assert p.block_ms(7, Block(5, 6, 0.5)) == pytest.approx(layer * p.se50_factors[(7, 5, 6)])
    lo, hi = runtime_range(p)
    assert lo < exact_runtime(p, MBConvArch.largest()) <= hi


def test_single_path_exact_runtime_extremes():
    p = load_profile(SP)
    assert round(exact_runtime(p, MBConvArch.largest()), 2) == 131.46   # all k5e6
    assert round(exact_runtime(p, MBConvArch.smallest()), 2) == 30.63   # first of stage k3e3, rest skipped
    lo, hi = runtime_range(p)
    assert (round(lo, 2), round(hi, 2)) == (30.63, 131.46)
    # Columns are k3e3 k3e6 k5e3 k5e6 (not the reference decoder's swapped e3/e6): layer 1 k3e6 is "1".
    assert p.layer_ms(1, 3, 6) == 9.2015 and p.layer_ms(1, 5, 3) == 5.9248


def test_exact_runtime_ignores_image_size_and_sums_layers():
    p = load_profile(SP)
    blocks = [Block(3, 3, 0.0)] * 20
    a32, a224 = MBConvArch(tuple(blocks)), MBConvArch(tuple(blocks), image_size=224)
    want = p.constant_ms + sum(p.layer_ms(i, 3, 3) for i in range(1, 21))
    assert exact_runtime(p, a32) == exact_runtime(p, a224) == pytest.approx(want)


def test_proxyless_profile_is_about_20_percent_slower():
    sp, px = load_profile(SP), load_profile(PX)
    # Layers 2-4 share one yaml key (same shape), so they share their runtimes.
    assert px.tables[2] == px.tables[3] == px.tables[4]
    ratio = exact_runtime(px, MBConvArch.largest()) / exact_runtime(sp, MBConvArch.largest())
    assert 1.15 < ratio < 1.25  # measured: 158.56 / 131.46 = 1.206
    rng = random.Random(0)
    archs = [random_arch(rng, 1.0, 224, se=False) for _ in range(50)]
    mean_ratio = sum(exact_runtime(px, a) / exact_runtime(sp, a) for a in archs) / len(archs)
    assert 1.15 < mean_ratio < 1.25  # measured: 1.19 (1.194 over 1000 random networks)


def _write(tmp_path, name, obj):
    path = tmp_path / name
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return str(path)


def _single_path_raw():
    return json.loads((BUNDLED_DIR / "pixel1-single-path.json").read_text())


@pytest.mark.parametrize("edit, match", [
    (lambda d: d.pop("5"), r"missing \['5'\]"),
    (lambda d: d.update({"22": d["21"]}), r"unexpected \['22'\]"),
    (lambda d: d["7"].pop("3"), "layer 7 needs columns"),
    (lambda d: d["7"].update({"2": "fast"}), "layer 7 k5e3 is not a runtime"),
])
def test_bad_single_path_profiles_raise(tmp_path, edit, match):
    raw = _single_path_raw()
    edit(raw)
    with pytest.raises(UsageError, match=match):
        load_profile(_write(tmp_path, "bad.json", raw))


def test_bad_profile_files_raise(tmp_path):
    with pytest.raises(UsageError, match="valid choices: pixel1-single-path, pixel1-proxylessnas-mobile, cpu-xeon-1thread or a"):
        load_profile("pixel2")
    with pytest.raises(UsageError, match="cannot read"):
        load_profile(_write(tmp_path, "garbage.json", "{not json"))
    with pytest.raises(UsageError, match="missing latency key 'expanded_conv-input:112x112x16"):
        load_profile(_write(tmp_path, "p.yaml", "Conv-input:224x224x3-output:112x112x32: {mean: 4.0}\n"))
    own = load_profile(SP).to_json()
    del own["layers"]["20"]
    with pytest.raises(UsageError, match=r"missing \[20\]"):
        load_profile(_write(tmp_path, "own.json", own))
    own = load_profile(SP).to_json()
    own["layers"]["3"] = {"k3e3": 1.0, "k3e6": 1.0, "k5e3": 1.0, "k7e6": 1.0}
    with pytest.raises(UsageError, match="unknown variant 'k7e6'"):
        load_profile(_write(tmp_path, "own.json", own))


def test_own_format_round_trip(tmp_path):
    p = load_profile(SP)
    se = {(i, k, e): 1.1 for i in range(1, 21) for k in (3, 5) for e in (3, 6)}
    q = Profile(name="mine", device="test", constant_ms=p.constant_ms, tables=p.tables, se_factors=se,
                measured={"settings": {"threads": 1}})
    back = load_profile(str(q.save(tmp_path / "mine.json")))
    assert back == q and "se50_factors" not in q.to_json()  # files without SE 0.5 factors stay as they were
    arch = MBConvArch.parse("mbconv w1 i32 n10 | k3e3se0.25 skip k5e6 k3e6 | k5e3 skip skip skip | "
                            "k3e3 k3e3 k3e3 k3e3 | k5e6se0.5 k5e6 k5e6 k5e6 | k3e3 skip skip k5e6")
    plain = exact_runtime(p, arch)
    extra = 0.1 * (p.layer_ms(1, 3, 3) + p.layer_ms(13, 5, 6))  # the two SE layers cost 10 % more
    assert exact_runtime(back, arch) == pytest.approx(plain + extra)  # SE 0.5 takes SE 0.25's factor
    # SE 0.5 measured apart (se50_factors): its own factor, saved and loaded back
    r = dataclasses.replace(q, se50_factors={key: 1.3 for key in se})
    back = load_profile(str(r.save(tmp_path / "mine50.json")))
    assert back == r
    extra = 0.1 * p.layer_ms(1, 3, 3) + 0.3 * p.layer_ms(13, 5, 6)
    assert exact_runtime(back, arch) == pytest.approx(plain + extra)


# -- differentiable runtime (Eq. 12-17) ---------------------------------------------------------------
def test_layer_runtime_hard_indicators_match_eq_12_13():
    t = load_profile(SP).tables[1]
    r = t[(3, 6)] / t[(5, 6)]
    assert layer_runtime(t, 1, 1, 1) == pytest.approx(t[(5, 6)])
    assert layer_runtime(t, 1, 0, 1) == pytest.approx(t[(5, 3)])
    assert layer_runtime(t, 1, 1, 0) == pytest.approx(t[(3, 6)])
    assert layer_runtime(t, 1, 0, 0) == pytest.approx(t[(5, 3)] * r)  # Eq. 13's k3e3 approximation
    assert layer_runtime(t, 0, 1, 1) == 0.0                              # skipped
    se = {(3, 3): 1.1, (3, 6): 1.2, (5, 3): 1.3, (5, 6): 1.4}
    assert layer_runtime(t, 1, 1, 1, 1, se) == pytest.approx(1.4 * t[(5, 6)])   # Eq. 15 + 17
    assert layer_runtime(t, 1, 0, 0, 1, se) == pytest.approx(1.1 * t[(5, 3)] * r)  # Eq. 16 + 17
    # SE 0.5 factors measured apart: the SE 0.5 indicator picks them; without them Eq. 17 as written
    se50 = {v: s + 0.5 for v, s in se.items()}
    assert layer_runtime(t, 1, 1, 1, 1, se, 1, se50) == pytest.approx(1.9 * t[(5, 6)])
    assert layer_runtime(t, 1, 1, 1, 1, se, 0, se50) == pytest.approx(1.4 * t[(5, 6)])
    assert layer_runtime(t, 1, 1, 1, 1, se, 1) == pytest.approx(1.4 * t[(5, 6)])


def test_differentiable_runtime_at_hard_indicators():
    p = load_profile(SP)
    assert differentiable_runtime(p, hard_indicators(MBConvArch.largest())) == pytest.approx(131.4578)
    smallest = differentiable_runtime(p, hard_indicators(MBConvArch.smallest()))
    assert round(smallest, 2) == 30.79  # vs 30.63 exact: k3e3 = R53 * R36 / R56 (see runtime.py)
    rng = random.Random(3)
    for _ in range(5):  # exact wherever no layer is k3e3
        arch = random_arch(rng, 1.0, 224, se=False)
        arch = MBConvArch(tuple(Block(5, b.expansion, 0.0) if not b.skip else b for b in arch.blocks), image_size=224)
        assert differentiable_runtime(p, hard_indicators(arch)) == pytest.approx(exact_runtime(p, arch))


def test_differentiable_runtime_has_gradients():
    base = load_profile(SP)
    p = Profile(name="se", device="t", constant_ms=base.constant_ms, tables=base.tables,
                se_factors={(i, k, e): 1.0 + 0.05 * k for i in range(1, 21) for k in (3, 5) for e in (3, 6)})
    ind = torch.full((20, 4), 0.5, requires_grad=True)
    rt = differentiable_runtime(p, [{"d_e3": row[0], "d_e6": row[1], "d_k5": row[2], "d_se25": row[3]}
                                    for row in ind])
    rt.backward()
    assert torch.isfinite(rt) and (ind.grad != 0).all()
    with pytest.raises(UsageError, match="need indicators for 20"):
        differentiable_runtime(p, [Indicators(1, 1, 1)] * 3)


@pytest.mark.parametrize("profile", [SP, CPU])
def test_network_runtime_is_the_layer_by_layer_sum(profile):
    """Eq. 11-17 on all layers at once (what the search uses) equals the layer-by-layer model, value and
    gradients, on a profile without SE factors and on one with SE 0.25 and 0.5 factors."""
    p = load_profile(profile)
    ind = torch.rand(20, 5, generator=torch.Generator().manual_seed(0)).requires_grad_()
    rows = differentiable_runtime(p, [Indicators(*row) for row in ind])
    g_rows, = torch.autograd.grad(rows, ind)
    vec = network_runtime(stacked_tables(p), Indicators(*ind.unbind(1)))
    g_vec, = torch.autograd.grad(vec, ind)
    torch.testing.assert_close(vec, rows)
    torch.testing.assert_close(g_vec, g_rows)


# -- FLOPs and parameters -----------------------------------------------------------------------------
def on_meta(build):
    """Build a network on the meta device: real shapes, no weights to initialise, no arithmetic to run."""
    with torch.device("meta"):
        return build()


def hook_macs(model: nn.Module, image_size: int) -> int:
    """Independent count: MACs of every Conv2d / Linear from its actual output shape (batch 1)."""
    total = 0

    def hook(m, inp, out):
        nonlocal total
        if isinstance(m, nn.Conv2d):
            total += out.numel() * m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
        else:
            total += m.in_features * m.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, image_size, image_size, device=next(model.parameters()).device))
    for h in handles:
        h.remove()
    return total


def mobilenet_v2_desc(image_size=224) -> NetDesc:
    """torchvision's mobilenet_v2 as a NetDesc: its (t, c, n, s) table, stem 32, head 1280."""
    layers, c_in, size = [], 32, image_size // 2
    for t, c, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                       (6, 320, 1, 1)]:
        for j in range(n):
            stride = s if j == 0 else 1
            layers.append(MBConvDesc(c_in, c, 3, t, stride, 0, size))
            c_in, size = c, -(-size // stride)
    return NetDesc(image_size=image_size, stem_channels=32, stem_stride=2, layers=tuple(layers),
                   head_channels=1280, num_classes=1000)


def test_mobilenet_v2_counts_match_torchvision():
    torchvision = pytest.importorskip("torchvision")
    net = on_meta(torchvision.models.mobilenet_v2)
    macs, params = net_counts(mobilenet_v2_desc())
    assert macs == hook_macs(net, 224)
    assert 295e6 < macs < 305e6  # the published ~300M multiply-adds
    assert params == sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("seed, width, size", [(0, 1.0, 32), (1, 0.5, 64), (2, 0.75, 224), (3, 1.3, 40)])
def test_mbconv_counts_match_built_network(seed, width, size):
    arch = random_arch(random.Random(seed), width, size, se=True)
    net = on_meta(arch.build)
    assert count_flops(arch) == hook_macs(net, size)
    assert count_params(arch) == sum(p.numel() for p in net.parameters())
    # At 224 the deployment network (first stage strided again) is counted, not the 32x32 one.
    deployed = MBConvArch(arch.blocks, width=width, image_size=224)
    assert count_flops(arch, 224) == hook_macs(on_meta(deployed.build), 224) == count_flops(deployed)


def test_exact_cost():
    arch = MBConvArch.largest()
    cost = exact_cost(arch, None, RunSettings(profile=SP))
    # independent references: the profile's slowest network (its documented 131.46 ms on Pixel 1), MACs
    # counted by forward hooks on the built network, parameters of the built network
    assert cost.runtime_ms == pytest.approx(131.46, abs=0.005)
    assert cost.flops == hook_macs(on_meta(arch.build), arch.image_size)
    assert cost.params == sum(q.numel() for q in arch.build().parameters())

    class CellArch:  # another space: counts its own FLOPs, has no device runtime
        space = "cells"

        def flops(self):
            return 123.0

        def build(self):
            return nn.Linear(3, 4)

    assert exact_cost(CellArch(), None, RunSettings()) == Cost(runtime_ms=None, flops=123.0, params=16)
    with pytest.raises(UsageError, match="unknown device profile"):
        exact_cost(arch, None, RunSettings(profile="nope"))


# -- profiling a device ---------------------------------------------------------------------------------
TINY = dict(image_size=32, width=0.25, repeats=2, warmup=1, passes=2, rounds=1, progress=False)


def test_tiny_cpu_profile_and_validate(tmp_path, capsys):
    threads = torch.get_num_threads()
    p = profile_device("cpu", threads=1, validate_n=3, out=tmp_path / "cpu.json", **TINY)
    assert torch.get_num_threads() == threads  # the caller's setting comes back
    assert p.input_size == 32 and p.width == 0.25 and p.constant_ms > 0
    assert len(p.se_factors) == len(p.se50_factors) == 80  # SE 0.25 and SE 0.5 measured apart (Eq. 14)
    assert all(v > 0 for t in p.tables.values() for v in t.values())
    v = p.measured["validation"]
    assert len(v["measured_ms"]) == 3
    # the validation compares what the saved profile predicts for each network with its measured time
    predicted = np.array([exact_runtime(p, MBConvArch.parse(a)) for a in v["archs"]])
    measured = np.array(v["measured_ms"])
    np.testing.assert_allclose(v["predicted_ms"], predicted, rtol=1e-9)
    assert v["mae_pct"] == pytest.approx(100 * np.mean(np.abs(predicted - measured) / measured))
    assert v["rmse_ms"] == pytest.approx(np.sqrt(np.mean((predicted - measured) ** 2)))
    assert load_profile(str(tmp_path / "cpu.json")) == p
    again = validate(p, 2, seed=5, progress=False)  # timing settings come from the profile
    assert len(again.archs) == 2 and "mean abs error" in capsys.readouterr().out
    assert all(MBConvArch.parse(a).image_size == 32 for a in again.archs)


def test_probe_plan_covers_every_variant_once_per_round():
    plan = probe_plan(rounds=2, se=True, seed=0)
    assert len(plan) == 24  # 4 (k, e) x SE {0, 0.25, 0.5} per round
    for i in range(20):
        for r in (0, 1):
            column = [blocks[i] for blocks in plan[12 * r:12 * r + 12]]
            assert len(set(column)) == 12 and not any(b.skip for b in column)
            assert {b.se for b in column} == {0.0, 0.25, 0.5}


def test_profile_bad_input():
    with pytest.raises(UsageError, match="valid choices: cpu, cuda"):
        profile_device("tpu", **TINY)
    with pytest.raises(UsageError, match="threads"):
        profile_device("cpu", threads=0, **TINY)
    with pytest.raises(UsageError, match="clock 'cpu'.*threads 1"):
        profile_device("cpu", threads=2, clock="cpu", **TINY)
    with pytest.raises(UsageError, match="unknown clock 'gpu'; valid choices: wall, cpu"):
        profile_device("cpu", clock="gpu", **TINY)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_tiny_cuda_profile():
    p = profile_device("cuda", validate_n=2, **TINY)
    assert p.constant_ms > 0 and "CUDA" in p.device and p.measured["validation"]["rmse_ms"] >= 0


# -- pricing one architecture ----------------------------------------------------------------------------
@pytest.mark.parametrize("seed, size", [(0, 32), (1, 64)])
def test_price_per_layer_is_what_the_layer_adds(seed, size):
    from searchers.cost.price import price

    profile = load_profile(PX)
    arch = random_arch(random.Random(seed), 0.5, size, se=True)
    got = price(arch, profile)
    assert (got.runtime_ms, got.macs_task, got.params) == (exact_runtime(profile, arch), count_flops(arch),
                                                           count_params(arch))
    assert got.macs_profile == count_flops(arch, 224) and got.constant_ms == profile.constant_ms
    for lp, b in zip(got.layers, arch.blocks):
        assert lp.block == str(b)
        if lp.layer % 4 == 1 or b.skip:  # a stage's first layer cannot be dropped; a skipped one costs nothing
            assert b.skip or lp.runtime_ms > 0 and lp.macs_task > 0 and lp.params > 0
            continue
        # Skipping a kept layer changes no other shape, so the network loses exactly this row.
        blocks = list(arch.blocks)
        blocks[lp.layer - 1] = Block(skip=True)
        less = MBConvArch(tuple(blocks), width=arch.width, image_size=size)
        assert exact_runtime(profile, arch) - exact_runtime(profile, less) == pytest.approx(lp.runtime_ms)
        assert count_flops(arch) - count_flops(less) == lp.macs_task
        assert count_flops(arch, 224) - count_flops(less, 224) == lp.macs_profile
        assert count_params(arch) - count_params(less) == lp.params


def test_arch_strings_round_trip_and_bad_ones_name_the_token():
    arch = random_arch(random.Random(3), 0.25, 32, se=True)
    assert MBConvArch.parse(str(arch)) == arch
    good = str(arch).split(" | ")
    for stages, match in [(["mbconv w0.25 i32 n10", *good[1:3], "k3e3 k5e6se0.75 k3e3 k3e3", *good[4:]],
                           "layer 10: bad layer token 'k5e6se0.75'"),
                          (["mbconv w-1 i32 n10", *good[1:]], "bad head 'mbconv w-1 i32 n10'"),
                          ([*good[:2], "skip k3e3 k3e3 k3e3", *good[3:]], "'skip' at layer 5")]:
        with pytest.raises(UsageError, match=match):
            MBConvArch.parse(" | ".join(stages))


@pytest.mark.parametrize("name, file", [("pixel1-single-path", "pixel1-single-path.json"),
                                        ("pixel1-proxylessnas-mobile", "pixel1-proxylessnas-mobile.yaml")])
def test_bundled_profiles_are_the_published_tables(shared_data, name, file):
    """The bundled copies read as the reference files the papers' code published (../shared/data)."""
    assert load_profile(name) == load_profile(shared_data / "device-profiles" / file)
    assert cmp_files(BUNDLED_DIR / file, shared_data / "device-profiles" / file)
