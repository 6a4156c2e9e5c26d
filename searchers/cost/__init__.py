"""Cost models: device runtime (profiles, Eq. 11-17), FLOPs and parameters of derived networks.

    from searchers.cost import load_profile, exact_runtime, count_flops
    profile = load_profile("pixel1-single-path")
    exact_runtime(profile, MBConvArch.largest())        # 131.46 ms on Pixel 1
    count_flops(arch, image_size=224)                    # MACs of the 224x224 deployment network

Profiling a device of one's own lives in `measure.py` (imported on use: it is heavier).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from .flops import MBConvDesc, NetDesc, count_flops, count_params, describe, net_counts
from .profiles import Profile, list_profiles, load_profile
from .runtime import Indicators, differentiable_runtime, exact_runtime, hard_indicators, layer_runtime, \
    runtime_range


@dataclass(frozen=True)
class Cost:
    """What a derived network costs: device runtime (None where no profile applies), MACs, parameters."""

    runtime_ms: float | None
    flops: float          # multiply-accumulates at the task's image size (the "FLOPs" of NAS papers)
    params: int


@lru_cache(maxsize=16)
def cached_profile(name_or_path: str) -> Profile:
    # Profiles are read-only tables; a search asks for the same one at every epoch.
    return load_profile(name_or_path)


def exact_cost(arch, task, settings) -> Cost:
    """Cost of a derived architecture: runtime from `settings.profile` (MBConv space only), FLOPs at the
    architecture's own image size, parameters of the built network. `task` is unused beyond the arch,
    which already carries the task's image size and class count."""
    if getattr(arch, "space", None) == "mbconv":
        profile = cached_profile(str(settings.profile))
        return Cost(runtime_ms=exact_runtime(profile, arch), flops=float(count_flops(arch)),
                    params=count_params(arch))
    # Other spaces (DARTS-style cells) have no device profile; they count their own FLOPs.
    params = sum(p.numel() for p in arch.build().parameters())
    return Cost(runtime_ms=None, flops=float(arch.flops()), params=int(params))


__all__ = ["Cost", "exact_cost", "cached_profile", "Profile", "load_profile", "list_profiles", "exact_runtime", "runtime_range",
           "Indicators", "layer_runtime", "differentiable_runtime", "hard_indicators", "count_flops",
           "count_params", "describe", "net_counts", "MBConvDesc", "NetDesc"]
