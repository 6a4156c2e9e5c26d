"""What one MBConv architecture costs, layer by layer: the answer of `python -m searchers info --arch`.

Runtime is the profile's exact table sum (Eq. 11: constant + the searchable layers' R^i_{k,e}, each
times its SE factor, Eq. 14), which is what a search reports. MACs are counted twice: at the profile's
input size (224x224, the deployment network the profile timed) and at the architecture's own image
size (the task's, e.g. 32x32 for CIFAR-10 or digits), because a small-input search trains the second
but is priced as the first. Parameters do not depend on the image size.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..spaces.mbconv import LAYERS_PER_STAGE, MBConvArch
from .flops import describe, layer_descs, mbconv_counts, net_counts
from .profiles import Profile
from .runtime import exact_runtime, layer_runtimes


@dataclass(frozen=True, kw_only=True)
class LayerPrice:
    """One searchable layer: its decision and what it adds (zeros when skipped)."""

    layer: int            # profile numbering, 1..20
    stage: int            # 1..5
    block: str            # its token, e.g. k5e6se0.25 or skip
    runtime_ms: float     # on the profiled device, SE factor included
    macs_profile: int     # at the profile's input size
    macs_task: int        # at the architecture's own image size
    params: int


@dataclass(frozen=True, kw_only=True)
class Price:
    arch: str
    profile: str
    device: str
    width: float          # the architecture's channel multiplier
    profile_width: float  # the multiplier of the networks the profile timed
    profile_size: int
    task_size: int
    constant_ms: float    # stem, fixed layers 0 and 21, head, classifier
    runtime_ms: float
    macs_profile: int
    macs_task: int
    params: int
    layers: tuple[LayerPrice, ...]

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    def lines(self) -> list[str]:
        """A terminal view: the totals, then one row per searchable layer and one for the fixed part."""
        p, t = self.profile_size, self.task_size
        kept = [lp for lp in self.layers if lp.block != "skip"]
        out = [f"architecture  {self.arch}",
               f"profile       {self.profile}: {self.device}, {p}x{p}, width {self.profile_width:g}",
               f"runtime       {self.runtime_ms:.2f} ms (exact table sum: {self.constant_ms:.2f} ms constant + "
               f"{self.runtime_ms - self.constant_ms:.2f} ms in {len(kept)} of {len(self.layers)} searchable layers)",
               f"MACs          {_m(self.macs_profile)} at {p}x{p}, {_m(self.macs_task)} at {t}x{t}",
               f"parameters    {_m(self.params)} at both sizes (width {self.width:g})"]
        if self.width != self.profile_width:
            out.append(f"note          the profile timed width-{self.profile_width:g} networks, so the runtime is "
                       f"that of these decisions at width {self.profile_width:g}; MACs and parameters are "
                       f"this network's")
        head = f"{'layer':>5} {'stage':>5}  {'block':<14} {'ms':>7} {f'MACs@{p}':>10} {f'MACs@{t}':>10} {'params':>9}"
        out += ["", head]
        row = "{:>5} {:>5}  {:<14} {:>7} {:>10} {:>10} {:>9}".format
        for lp in self.layers:
            cells = (f"{lp.runtime_ms:.2f}", _m(lp.macs_profile), _m(lp.macs_task), _m(lp.params))
            out.append(row(lp.layer, lp.stage, lp.block, *(cells if lp.block != "skip" else ("-",) * 4)))
        fixed = [self.macs_profile - sum(lp.macs_profile for lp in self.layers),
                 self.macs_task - sum(lp.macs_task for lp in self.layers),
                 self.params - sum(lp.params for lp in self.layers)]
        out.append(row("fixed", "", "stem,0,21,head", f"{self.constant_ms:.2f}", *map(_m, fixed)))
        out.append(row("total", "", "", f"{self.runtime_ms:.2f}", _m(self.macs_profile), _m(self.macs_task),
                       _m(self.params)))
        return out


def _m(n: int) -> str:
    """A count as people read them in NAS tables: 300.8M, 3.4M, 12.5k."""
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.1f}k"


def price(arch: MBConvArch, profile: Profile) -> Price:
    """Runtime on `profile` (total and per layer), MACs at the profile's and the arch's image size, params."""
    size = profile.input_size
    deploy, task = layer_descs(arch, size)[1:-1], layer_descs(arch)[1:-1]
    layers = []
    for i, (b, ms, d, t) in enumerate(zip(arch.blocks, layer_runtimes(profile, arch), deploy, task)):
        (m_d, p), (m_t, _) = (mbconv_counts(d), mbconv_counts(t)) if d is not None else ((0, 0), (0, 0))
        layers.append(LayerPrice(layer=i + 1, stage=i // LAYERS_PER_STAGE + 1, block=str(b), runtime_ms=ms,
                                 macs_profile=m_d, macs_task=m_t, params=p))
    macs_profile, params = net_counts(describe(arch, size))
    return Price(arch=str(arch), profile=profile.name, device=profile.device, width=arch.width,
                 profile_width=profile.width, profile_size=size, task_size=arch.image_size,
                 constant_ms=profile.constant_ms, runtime_ms=exact_runtime(profile, arch),
                 macs_profile=macs_profile, macs_task=net_counts(describe(arch))[0], params=params,
                 layers=tuple(layers))
