"""How well does a measured CPU/GPU profile predict whole networks? In-context vs isolated layer timing.

    python benchmarks/profile_accuracy.py --threads 1 --image-size 224 --n 20

Measures the in-context profile of searchers/cost/measure.py and, for comparison, a profile whose layers
are each timed alone (weights warm in cache), then times N random whole networks once and prints each
profile's mean absolute error %, RMSE and mean signed error against them (Single-Path NAS, Pixel 1:
1.76 %, 1.32 ms). Numbers depend on the machine and on whatever else runs on it; nothing is asserted.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import time

import torch

from searchers.cost.measure import Validation, check_device, timing_env, measure_profile, time_network, validate
from searchers.cost.profiles import LAYERS, VARIANTS, Profile
from searchers.cost.runtime import exact_runtime
from searchers.spaces.mbconv import MBConv, MBConvArch, feature_sizes, layer_specs


def isolated_profile(ref: Profile, device: str, threads: int, repeats: int, warmup: int, clock: str) -> Profile:
    """The naive profile: each layer variant timed alone on a random input of its shape."""
    dev = check_device(device)
    size, width = ref.input_size, ref.width
    specs, sizes = layer_specs(width, size), feature_sizes(size, width)
    timed = lambda m, c, s: time_network(m.to(dev).eval(), torch.randn(1, c, s, s, device=dev), repeats, warmup,
                                         clock)
    with timing_env(threads):
        tables, se = {}, {}
        for i in LAYERS:
            sp = specs[i]
            for k, e in VARIANTS:
                tables.setdefault(i, {})[(k, e)] = timed(MBConv(sp.in_channels, sp.out_channels, k, e, sp.stride),
                                                         sp.in_channels, sizes[i])
                if ref.se_factors:
                    with_se = timed(MBConv(sp.in_channels, sp.out_channels, k, e, sp.stride, 0.25), sp.in_channels,
                                    sizes[i])
                    se[(i, k, e)] = with_se / tables[i][(k, e)]
        net = MBConvArch.smallest(width=width, image_size=size).build()
        first, last = specs[0], specs[-1]
        constant = (timed(net.stem, 3, size) + timed(net.layers["0"], first.in_channels, sizes[0])
                    + timed(net.layers["21"], last.in_channels, sizes[-1])
                    + timed(net.head, last.out_channels, sizes[-1]))
    return dataclasses.replace(ref, name=ref.name + "-isolated", tables=tables, se_factors=se, constant_ms=constant,
                               measured=None)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--no-se", action="store_true", help="profile and validate without SE paths")
    ap.add_argument("--n", type=int, default=20, help="random whole networks to validate on")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--clock", default="wall", help="wall, or cpu (thread CPU time: 1 CPU thread on a busy machine)")
    a = ap.parse_args()

    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    ctx = measure_profile(a.device, a.threads, a.image_size, a.width, a.repeats, a.warmup, a.rounds, not a.no_se,
                          a.seed, clock=a.clock)
    t1 = time.perf_counter()
    iso = isolated_profile(ctx, a.device, a.threads, a.repeats, a.warmup, a.clock)
    t2 = time.perf_counter()
    v = validate(ctx, a.n, seed=a.seed + 1, verbose=False)
    t3 = time.perf_counter()
    print(f"device: {ctx.device}; {a.image_size}x{a.image_size}, width {a.width}, {a.repeats} repeats, "
          f"{a.rounds} rounds, SE {'off' if a.no_se else 'on'}, clock {a.clock}")
    print(f"time: in-context profile {t1 - t0:.0f} s, isolated {t2 - t1:.0f} s, validation {t3 - t2:.0f} s; "
          f"1-min load average {load0:.2f} before, {os.getloadavg()[0]:.2f} after ({os.cpu_count()} CPUs)")
    print(f"constant: in-context {ctx.constant_ms:.2f} ms, isolated {iso.constant_ms:.2f} ms")
    for p in (ctx, iso):
        archs = [MBConvArch.parse(s) for s in v.archs]
        pv = Validation(v.archs, tuple(exact_runtime(p, x) for x in archs), v.measured_ms)
        print(f"{p.name:>24}: {pv.summary()}")


if __name__ == "__main__":
    main()
