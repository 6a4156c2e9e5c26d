"""Runtime of MBConv networks from a device profile: exact (lookup) and differentiable (Eq. 11-17).

Exact: a decoded architecture's runtime is the profile's constant plus, for every searchable layer
that is not skipped, its measured R^i_{k,e} times its SE factor s^i_{k,e,se} when the layer has SE
(Eq. 11: layer runtimes add up; Eq. 14: SE scales a layer's runtime).

Differentiable: the searcher sees each layer through indicator values (the 1(...) terms of Eq. 12-17,
relaxed to sigmoids during search); this module only composes them, so it works on floats and on
torch tensors alike and gradients flow into the indicators.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from ..errors import UsageError
from ..spaces.mbconv import SE_RATIOS, Block, MBConvArch, layer_specs
from .profiles import LAYERS, VARIANTS, Profile

Number = Any  # float or torch.Tensor


def layer_runtimes(profile: Profile, arch: MBConvArch) -> list[float]:
    """Runtime (ms) of each searchable layer 1..20 of a decoded architecture: R^i_{k,e}, times
    s^i_{k,e,se} when the layer has SE (Eq. 14), 0 when skipped."""
    return [profile.block_ms(layer, b) for layer, b in zip(LAYERS, arch.blocks)]


def exact_runtime(profile: Profile, arch: MBConvArch) -> float:
    """Runtime (ms) of a decoded architecture on the profiled device at the profile's input size (Eq. 11)."""
    total = profile.constant_ms
    for ms in layer_runtimes(profile, arch):  # summed in layer order, as recorded studies were
        total += ms
    return total


def runtime_range(profile: Profile) -> tuple[float, float]:
    """(fastest, slowest) exact runtime over the whole space; layers are independent (Eq. 11)."""
    lo = hi = profile.constant_ms
    for spec in layer_specs(1.0, profile.input_size)[1:-1]:
        # SE off has factor 1; SE on has factor s (usually > 1, but take whichever is extreme).
        options = [profile.block_ms(spec.index, Block(k, e, r))
                   for (k, e) in profile.tables[spec.index] for r in SE_RATIOS]
        lo += 0.0 if spec.skippable else min(options)
        hi += max(options)
    return lo, hi


@dataclass(frozen=True)
class Indicators:
    """The NAS decisions of one searchable layer as indicator values in [0, 1] (floats or tensors).

    d_e3:   the layer is kept (1(||w_k,3|| > t_e=3), Eq. 12); fixed to 1 for the first layer of a stage.
    d_e6:   expansion 6 instead of 3 (1(||w_k,6\\3|| > t_e=6)).
    d_k5:   kernel 5x5 instead of 3x3 (1(||w_5x5\\3x3|| > t_k=5)).
    d_se25: an SE path is present (1(||w_0.25|| > t_se=0.25), Eq. 17).
    d_se50: SE ratio 0.5 instead of 0.25 (1(||w_0.5\\0.25|| > t_se=0.5)). It moves the runtime only on a
            profile that measured SE 0.5 apart (se50_factors); otherwise s_0.25 serves both ratios and
            this is Eq. 17 exactly, which uses the 0.25 indicator only (observation (i)).
    """

    d_e3: Number
    d_e6: Number
    d_k5: Number
    d_se25: Number = 0.0
    d_se50: Number = 0.0

    @classmethod
    def of_block(cls, block) -> "Indicators":
        """Hard (0/1) indicators of a decoded Block."""
        if block.skip:
            return cls(0.0, 0.0, 0.0, 0.0)
        return cls(1.0, float(block.expansion == 6), float(block.kernel == 5), float(block.se > 0),
                   float(block.se == 0.5))


def layer_runtime(table: Mapping[tuple[int, int], float], d_e3: Number, d_e6: Number, d_k5: Number,
                  d_se25: Number = 0.0, se: Mapping[tuple[int, int], float] | None = None,
                  d_se50: Number = 0.0, se50: Mapping[tuple[int, int], float] | None = None) -> Number:
    """Differentiable runtime (ms) of one searchable layer, Eq. 12-13 and 15-17.

    `table` is the layer's {(k, e): ms}; `se` its SE factors {(k, e): s_{k,e,0.25}} (1.0 if None);
    `se50` its SE 0.5 factors where measured apart (None: s_0.25 serves both, observation (i)), between
    which the SE 0.5 indicator `d_se50` interpolates (with se50 None, Eq. 17 exactly).

    With hard indicators this returns R_{5,3}, R_{5,6}, R_{3,6} exactly, but R_{5,3} * R_{3,6} / R_{5,6}
    for k3e3: Eq. 13 scales the 5x5 runtime by one kernel ratio r measured at e6, i.e. it assumes the
    3x3/5x5 ratio is the same at e3 as at e6. On the Pixel 1 table the real k3e3 runtimes are a bit
    lower, so the model's fastest network is ~30.8 ms where the exact table sum gives 30.63 ms. The
    search only needs the gradient direction; reported runtimes use `exact_runtime`.
    """
    r53, r56, r36 = table[(5, 3)], table[(5, 6)], table[(3, 6)]
    # Eq. 12: runtime of the expansion decision (skip -> 0, e3 -> R_5,3, e6 -> R_5,6).
    r_e = d_e3 * (r53 + d_e6 * (r56 - r53))
    # Eq. 13: the kernel decision scales it between the 3x3 share r = R_3,6 / R_5,6 and 1.
    ratio = r36 / r56
    r_ke = r_e * ratio + r_e * (1 - ratio) * d_k5
    s25 = lambda k, e: 1.0 if se is None else se.get((k, e), 1.0)
    if se50 is None:
        s = s25
    else:  # beyond Eq. 15-16: the factor of the chosen SE ratio, s_0.25 + d_se50 * (s_0.5 - s_0.25)
        s = lambda k, e: s25(k, e) + d_se50 * (se50.get((k, e), s25(k, e)) - s25(k, e))
    # Eq. 15-16: the SE scaling factor follows the kernel decision, one per expansion.
    s_e6 = d_k5 * s(5, 6) + (1 - d_k5) * s(3, 6)
    s_e3 = d_k5 * s(5, 3) + (1 - d_k5) * s(3, 3)
    # Eq. 17: with an SE path the layer costs s times its plain runtime; s picked by the expansion.
    return (1 - d_se25) * r_ke + d_se25 * (d_e6 * s_e6 + (1 - d_e6) * s_e3) * r_ke


def differentiable_runtime(profile: Profile,
                           indicators_per_layer: Sequence[Indicators | Mapping[str, Number]]) -> Number:
    """Eq. 11: network runtime (ms) = constant + sum of the 20 searchable layers' Eq. 17 runtimes.

    `indicators_per_layer` holds one `Indicators` (or a mapping with its field names) per layer 1..20.
    """
    if len(indicators_per_layer) != len(LAYERS):
        raise UsageError(f"need indicators for {len(LAYERS)} searchable layers, got {len(indicators_per_layer)}")
    total = profile.constant_ms
    for layer, ind in zip(LAYERS, indicators_per_layer):
        if not isinstance(ind, Indicators):
            ind = Indicators(**ind)
        se = {v: profile.se_factor(layer, *v) for v in profile.tables[layer]} if profile.se_factors else None
        se50 = ({v: profile.se_factor(layer, *v, 0.5) for v in profile.tables[layer]} if profile.se50_factors
                else None)
        total = total + layer_runtime(profile.tables[layer], ind.d_e3, ind.d_e6, ind.d_k5, ind.d_se25, se,
                                      ind.d_se50, se50)
    return total


def stacked_tables(profile: Profile, device=None, dtype=None):
    """The profile's per-layer tables as {(k, e): tensor of the 20 layers' values} (and the SE factors the
    same way, None where the profile has none), for `network_runtime`. Built once per search: the values
    are those `differentiable_runtime` looks up layer by layer, defaults included."""
    import torch

    col = lambda values: torch.tensor(values, device=device, dtype=dtype or torch.get_default_dtype())
    table = {v: col([profile.tables[layer][v] for layer in LAYERS]) for v in VARIANTS}   # every layer has all 4
    factors = lambda ratio: {v: col([profile.se_factor(layer, *v, ratio) for layer in LAYERS]) for v in VARIANTS}
    return (profile.constant_ms, table, factors(0.25) if profile.se_factors else None,
            factors(0.5) if profile.se50_factors else None)


def network_runtime(tables, ind: Indicators) -> Number:
    """Eq. 11 with all 20 layers at once: `ind` holds in each field a tensor of the 20 layers' indicator
    values, `tables` is `stacked_tables(profile)`. The same Eq. 12-17 (`layer_runtime`) as
    `differentiable_runtime`, evaluated on vectors: a few tensor ops instead of ~30 per layer (on a CPU
    the per-op overhead of the layer-by-layer sum was ~2 % of a search step; benchmarks/step_ratio.py)."""
    constant, table, se, se50 = tables
    return constant + layer_runtime(table, ind.d_e3, ind.d_e6, ind.d_k5, ind.d_se25, se, ind.d_se50, se50).sum()


def hard_indicators(arch: MBConvArch) -> list[Indicators]:
    """The 0/1 indicators of a decoded architecture (for checks of the relaxed model against the table)."""
    return [Indicators.of_block(b) for b in arch.blocks]
