"""How well does a measured CPU/GPU profile predict whole networks? In-context vs isolated layer timing.

    python benchmarks/profile_accuracy.py --threads 1 --image-size 224 --n 30 --passes 6
    python benchmarks/profile_accuracy.py --clock cpu --profile cpu-xeon-1thread   # also a saved profile

Three kinds of measurement: the probe networks of searchers/cost/measure.py (layers timed in context,
at layer boundaries), every layer variant timed alone (weights warm in cache, the naive profile), and
N random whole networks. They are interleaved in shuffled passes and each item's median over passes
is kept, so a machine whose load drifts (a shared CI box) biases all three alike instead of whichever
ran during a busy minute. Prints each profile's mean absolute error %, RMSE and mean signed error on
the whole networks (Single-Path NAS on Pixel 1: 1.76 %, 1.32 ms); with `--profile`, also a saved profile
(a bundled name or a file, measured at the same size and width) on the same networks, timed now.
Nothing is asserted.

Noise floor: each whole network is also timed a second time as an item of its own (same method, its own
passes, interleaved with the rest), and the two medians are compared like a prediction with a
measurement. No profile can be checked more finely than that: when the twins differ by ~2 %, a 2 %
mean absolute error is out of reach here (and the profile's own probes carry the same noise).
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import time

import torch

from searchers.cost.measure import (Timing, Validation, _device_name, probe_plan, profile_from_probes, random_arch,
                                    run_interleaved, time_network, time_segments, timing_env)
from searchers.cost.profiles import LAYERS, VARIANTS, Profile, load_profile
from searchers.cost.runtime import exact_runtime
from searchers.spaces.mbconv import SE_RATIOS, MBConv, MBConvArch, feature_sizes, layer_specs


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per item and pass (median kept)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--passes", type=int, default=6, help="interleaved passes over all items (median kept)")
    ap.add_argument("--rounds", type=int, default=2, help="probe rounds (see measure.py)")
    ap.add_argument("--no-se", action="store_true", help="profile and validate without SE paths")
    ap.add_argument("--n", type=int, default=30, help="random whole networks to validate on")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--clock", default="wall", help="wall, or cpu (thread CPU time: 1 CPU thread on a busy machine)")
    ap.add_argument("--profile", help="also validate this saved profile (bundled name or file) on the same networks")
    a = ap.parse_args()
    saved = load_profile(a.profile) if a.profile else None
    if saved is not None and (saved.input_size, saved.width) != (a.image_size, a.width):
        ap.error(f"profile {saved.name} was measured at {saved.input_size} px, width {saved.width}; "
                 f"pass --image-size {saved.input_size} --width {saved.width}")
    t = Timing(device=a.device, threads=a.threads, repeats=a.repeats, warmup=a.warmup, passes=a.passes, clock=a.clock)
    dev, size, width, se = t.torch_device, a.image_size, a.width, not a.no_se
    x = torch.randn(1, 3, size, size, device=dev)
    specs, sizes = layer_specs(width, size), feature_sizes(size, width)

    with timing_env(a.threads):
        build = lambda arch: arch.build().to(dev).eval()
        plan = probe_plan(a.rounds, se, a.seed)
        probes = [build(MBConvArch(b, width=width, image_size=size)) for b in plan]
        rng = random.Random(a.seed + 1)
        archs = [random_arch(rng, width, size, se) for _ in range(a.n)]
        nets = [build(arch) for arch in archs]
        alone = {}  # (layer, k, e, se) -> (module, input): the naive profile's layers
        for i in LAYERS:
            sp = specs[i]
            for k, e in VARIANTS:
                for r in SE_RATIOS if se else (0.0,):
                    alone[(i, k, e, r)] = (MBConv(sp.in_channels, sp.out_channels, k, e, sp.stride, r).to(dev).eval(),
                                           torch.randn(1, sp.in_channels, sizes[i], sizes[i], device=dev))
        ref = build(MBConvArch.smallest(width=width, image_size=size))
        fixed = {"stem": (ref.stem, torch.randn(1, 3, size, size, device=dev)),
                 "0": (ref.layers["0"], torch.randn(1, specs[0].in_channels, sizes[0], sizes[0], device=dev)),
                 "21": (ref.layers["21"], torch.randn(1, specs[-1].in_channels, sizes[-1], sizes[-1], device=dev)),
                 "head": (ref.head, torch.randn(1, specs[-1].out_channels, sizes[-1], sizes[-1], device=dev))}

        keys = ([("probe", j) for j in range(len(probes))] + [("net", j) for j in range(len(nets))]
                + [("twin", j) for j in range(len(nets))]
                + [("alone", key) for key in alone] + [("fixed", key) for key in fixed])
        jobs = ([lambda n=n: time_segments(n, x, t) for n in probes] + [lambda n=n: time_network(n, x, t) for n in nets]
                + [lambda n=n: time_network(n, x, t) for n in nets]
                + [lambda m=m, inp=inp: time_network(m, inp, t) for m, inp in [*alone.values(), *fixed.values()]])
        load0, t0 = os.getloadavg()[0], time.perf_counter()
        runs = dict(zip(keys, run_interleaved(jobs, t, a.seed, progress=True)))
        wall = time.perf_counter() - t0

    med = lambda kind, key: statistics.median(runs[(kind, key)])
    measured = tuple(med("net", j) for j in range(a.n))
    ctx = profile_from_probes(plan, [[statistics.median(c) for c in zip(*runs[("probe", j)])]
                                     for j in range(len(plan))],
                              name="in-context", device=_device_name(t), input_size=size, width=width)
    tables = {i: {(k, e): med("alone", (i, k, e, 0.0)) for k, e in VARIANTS} for i in LAYERS}
    factors = lambda r: {(i, k, e): med("alone", (i, k, e, r)) / tables[i][(k, e)]
                         for i in LAYERS for k, e in VARIANTS} if se else {}
    iso = Profile(name="isolated", device=ctx.device, input_size=size, width=width, tables=tables,
                  constant_ms=sum(med("fixed", key) for key in fixed), se_factors=factors(0.25),
                  se50_factors=factors(0.5))

    print(f"device: {ctx.device}; {size}x{size}, width {width}, SE {'on' if se else 'off'}, clock {a.clock}; "
          f"{a.passes} interleaved passes x {a.repeats} repeats, {len(plan)} probes")
    print(f"took {wall:.0f} s; 1-min load average {load0:.2f} before, {os.getloadavg()[0]:.2f} after "
          f"({os.cpu_count()} CPUs)")
    print(f"constant: in-context {ctx.constant_ms:.2f} ms, isolated {iso.constant_ms:.2f} ms")
    for p in (ctx, iso) + ((saved,) if saved is not None else ()):
        v = Validation(tuple(map(str, archs)), tuple(exact_runtime(p, arch) for arch in archs), measured)
        print(f"{p.name:>11}: {v.summary()}")
    twins = Validation(tuple(map(str, archs)), tuple(med("twin", j) for j in range(a.n)), measured)
    print(f"noise floor (the same networks timed twice, second vs first): {twins.summary()}")


if __name__ == "__main__":
    main()
