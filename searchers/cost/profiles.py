"""Device profiles: per-layer runtime lookup tables of the Single-Path MBConv space.

A profile holds, for each searchable layer 1..20 at the deployment input size (224x224), the runtime
of its four MBConv variants R^i_{k,e} for k in {3, 5}, e in {3, 6} (paper Sec. III-D, the inputs of
Eq. 12-13), optional SE scaling factors s^i_{k,e,se} (Eq. 14), and a constant for everything no
decision touches: stem, fixed layers 0 and 21, head conv and classifier.

SE factors: `se_factors` holds s^i_{k,e,0.25}, which also serves SE 0.5 where nothing else is known
(observation (i): s_0.25 ~ s_0.5, the paper's Eq. 15-17); `se50_factors`, when present, holds
s^i_{k,e,0.5} measured on its own (`python -m searchers profile` measures both). A profile without SE
factors (the two Pixel 1 tables: nothing was measured there) prices SE at 1.0x, i.e. for free.

Three file formats load into the same `Profile`:
  * the Single-Path NAS json (keys "0".."21", columns "0"=k3e3 "1"=k3e6 "2"=k5e3 "3"=k5e6),
  * the ProxylessNAS latency yaml (one key per operator and shape),
  * our own json (`Profile.save`), written by `python -m searchers profile` (see measure.py).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..result import atomic_text
from ..spaces.mbconv import KERNELS, EXPANSIONS, NUM_SEARCHABLE, feature_sizes, layer_specs

BUNDLED_DIR = Path(__file__).parent / "profiles"
BUNDLED = {
    # Pixel 1 tables as published: no SE was measured there, so SE costs 1.0x (is free) on them
    "pixel1-single-path": "pixel1-single-path.json",
    "pixel1-proxylessnas-mobile": "pixel1-proxylessnas-mobile.yaml",
    # measured on this project's 2-vCPU machine with `python -m searchers profile` (README): SE priced
    "cpu-xeon-1thread": "cpu-xeon-1thread.json",
}
FORMAT = "hwnas-device-profile/1"
LAYERS = tuple(range(1, NUM_SEARCHABLE + 1))                 # searchable layers 1..20
VARIANTS = tuple((k, e) for k in KERNELS for e in EXPANSIONS)  # (3,3) (3,6) (5,3) (5,6)
# The Single-Path reference code adds this for stem, head, classifier and fixed layers 0 and 21.
SINGLE_PATH_CONSTANT_MS = 19.5999
# Its columns: "0"=k3e3, "1"=k3e6, "2"=k5e3, "3"=k5e6, the order of the reference runtime model
# (Eq. 12-13 use "1" as R_3x3,6). Its released decoder swapped e3/e6 for two choices; not copied here.
SINGLE_PATH_COLUMNS = dict(zip("0123", VARIANTS))


def variant_name(k: int, e: int) -> str:
    return f"k{k}e{e}"


@dataclass(frozen=True, kw_only=True)
class Profile:
    """Runtime lookup table of one device for the MBConv space; times in `unit` (ms)."""

    name: str
    device: str                                  # free-text description of the measured device
    constant_ms: float                           # stem + layer 0 + layer 21 + head + classifier
    tables: dict[int, dict[tuple[int, int], float]]  # layer 1..20 -> {(k, e): ms}
    se_factors: dict[tuple[int, int, int], float] = field(default_factory=dict)  # (layer,k,e) -> s_0.25
    se50_factors: dict[tuple[int, int, int], float] = field(default_factory=dict)  # (layer,k,e) -> s_0.5
    input_size: int = 224                        # the resolution the tables were measured at
    width: float = 1.0                           # channel multiplier of the measured networks
    unit: str = "ms"
    measured: dict[str, Any] | None = None       # our own profiles: settings and whole-net timings

    def __post_init__(self):
        _check_tables(self.name, self.tables)
        if not math.isfinite(self.constant_ms) or self.constant_ms < 0:
            raise UsageError(f"profile {self.name}: constant_ms must be a finite number >= 0, got {self.constant_ms}")
        for what, factors in (("SE factors", self.se_factors), ("SE 0.5 factors", self.se50_factors)):
            bad = [key for key in factors if key[0] not in LAYERS or tuple(key[1:]) not in VARIANTS]
            if bad:
                raise UsageError(f"profile {self.name}: {what} for unknown (layer, k, e) {bad[:3]}")
            bad = [key for key, s in factors.items()
                   if not isinstance(s, (int, float)) or not math.isfinite(s) or s <= 0]
            if bad:
                raise UsageError(f"profile {self.name}: {what} must be numbers > 0; bad at (layer, k, e) {bad[:3]}")
        if self.unit != "ms":
            raise UsageError(f"profile {self.name}: unit must be 'ms', got {self.unit!r}")

    def layer_ms(self, layer: int, kernel: int, expansion: int) -> float:
        """R^i_{k,e}: runtime of searchable layer `layer` as MBConv-k-e without SE."""
        return self.tables[layer][(kernel, expansion)]

    def se_factor(self, layer: int, kernel: int, expansion: int, ratio: float = 0.25) -> float:
        """s^i_{k,e,ratio} of Eq. 14 (runtime with SE / without): SE 0.5's own factor where measured, else
        the SE 0.25 factor (observation (i)); 1.0 where the profile has none."""
        key = (layer, kernel, expansion)
        if ratio == 0.5 and key in self.se50_factors:
            return self.se50_factors[key]
        return self.se_factors.get(key, 1.0)

    def block_ms(self, layer: int, block) -> float:
        """Runtime (ms) of searchable layer `layer` as a decoded Block: R^i_{k,e} times s^i_{k,e,se} when
        it has SE (Eq. 14), 0 when skipped."""
        if block.skip:
            return 0.0
        s = self.se_factor(layer, block.kernel, block.expansion, block.se) if block.se else 1.0
        return self.layer_ms(layer, block.kernel, block.expansion) * s

    # -- our own json format -----------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        out = {
            "format": FORMAT, "name": self.name, "device": self.device, "unit": self.unit,
            "input_size": self.input_size, "width": self.width, "constant_ms": self.constant_ms,
            "layers": {str(i): {variant_name(k, e): self.tables[i][(k, e)] for k, e in VARIANTS} for i in LAYERS},
        }
        if self.se_factors:
            out["se_factors"] = {str(i): {variant_name(k, e): self.se_factor(i, k, e) for k, e in VARIANTS}
                                 for i in LAYERS}
        if self.se50_factors:
            out["se50_factors"] = {str(i): {variant_name(k, e): self.se_factor(i, k, e, 0.5) for k, e in VARIANTS}
                                   for i in LAYERS}
        if self.measured is not None:
            out["measured"] = self.measured
        return out

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_text(path, json.dumps(self.to_json(), indent=1) + "\n")
        return path


def _check_tables(name: str, tables) -> None:
    """A profile must cover exactly layers 1..20, each with all four (k, e) variants, as numbers >= 0."""
    if sorted(tables) != list(LAYERS):
        missing = [i for i in LAYERS if i not in tables]
        extra = sorted(set(tables) - set(LAYERS))
        raise UsageError(f"profile {name}: needs searchable layers 1..{NUM_SEARCHABLE}; "
                         f"missing {missing or 'none'}, unexpected {extra or 'none'}")
    for i in LAYERS:
        if sorted(tables[i]) != sorted(VARIANTS):
            raise UsageError(f"profile {name}: layer {i} needs variants {[variant_name(*v) for v in VARIANTS]}, "
                             f"got {sorted(tables[i])}")
        for v, ms in tables[i].items():
            if not isinstance(ms, (int, float)) or not math.isfinite(ms) or ms < 0:
                raise UsageError(f"profile {name}: layer {i} {variant_name(*v)} is not a runtime in ms: {ms!r}")


def _parse_variants(name: str, layer: str, row) -> dict[tuple[int, int], float]:
    if not isinstance(row, dict):
        raise UsageError(f"profile {name}: layer {layer} must map k?e? to ms, got {type(row).__name__}")
    out = {}
    for key, ms in row.items():
        v = next((v for v in VARIANTS if variant_name(*v) == key), None)
        if v is None:
            raise UsageError(f"profile {name}: layer {layer} has unknown variant {key!r}; "
                             f"valid: {', '.join(variant_name(*v) for v in VARIANTS)}")
        out[v] = ms
    return out


def _layer_key(name: str, key: str) -> int:
    try:
        return int(key)
    except ValueError:
        raise UsageError(f"profile {name}: layer keys must be integers, got {key!r}") from None


# -- loaders -----------------------------------------------------------------------------------
def load_single_path_json(raw: dict, name: str) -> Profile:
    """The Single-Path NAS public runtime model (nas-search/pixel1_runtime_model.json)."""
    expected = {str(i) for i in range(NUM_SEARCHABLE + 2)}  # "0".."21": fixed 0, searchable 1..20, fixed 21
    if set(raw) != expected:
        raise UsageError(f"profile {name}: expected {len(expected)} layer keys '0'..'{NUM_SEARCHABLE + 1}', got "
                         f"{len(raw)}; missing {sorted(expected - set(raw), key=len) or 'none'}, "
                         f"unexpected {sorted(set(raw) - expected) or 'none'}")
    tables = {}
    for i in LAYERS:
        row = raw[str(i)]
        if not isinstance(row, dict) or sorted(row) != sorted(SINGLE_PATH_COLUMNS):
            raise UsageError(f"profile {name}: layer {i} needs columns '0'..'3' (k3e3 k3e6 k5e3 k5e6), "
                             f"got {sorted(row) if isinstance(row, dict) else row!r}")
        tables[i] = {SINGLE_PATH_COLUMNS[c]: ms for c, ms in row.items()}
    return Profile(name=name, device="Google Pixel 1 (Single-Path NAS public runtime model)",
                   constant_ms=SINGLE_PATH_CONSTANT_MS, tables=tables)


def _proxyless_key(c_in, c_out, size_in, stride, kernel, expansion) -> str:
    size_out = math.ceil(size_in / stride)
    idskip = int(stride == 1 and c_in == c_out)
    return (f"expanded_conv-input:{size_in}x{size_in}x{c_in}-output:{size_out}x{size_out}x{c_out}"
            f"-expand:{expansion}-kernel:{kernel}-stride:{stride}-idskip:{idskip}")


def load_proxyless_yaml(raw: dict, name: str) -> Profile:
    """The ProxylessNAS mobile latency table (proxylessnas/mobile_trim.yaml), mapped onto our layers.

    Each of our layers at 224x224 has its own key (shape, expansion, kernel, stride, identity skip);
    the constant gathers the stem (Conv), fixed layers 0 (e1 k3) and 21 (e6 k3), head (Conv_1), Logits.
    """

    def mean(key: str) -> float:
        if key not in raw or not isinstance(raw[key], dict) or "mean" not in raw[key]:
            raise UsageError(f"profile {name}: missing latency key {key!r}")
        return float(raw[key]["mean"])

    specs, sizes = layer_specs(1.0, 224), feature_sizes(224, 1.0)
    tables = {
        s.index: {(k, e): mean(_proxyless_key(s.in_channels, s.out_channels, sizes[s.index], s.stride, k, e))
                  for k, e in VARIANTS}
        for s in specs[1:-1]
    }
    first, last = specs[0], specs[-1]
    last_size = math.ceil(sizes[-1] / last.stride)
    constant = (mean(f"Conv-input:224x224x3-output:{sizes[0]}x{sizes[0]}x{first.in_channels}")
                + mean(_proxyless_key(first.in_channels, first.out_channels, sizes[0], 1, 3, 1))   # layer 0
                + mean(_proxyless_key(last.in_channels, last.out_channels, sizes[-1], 1, 3, 6))    # layer 21
                + mean(f"Conv_1-input:{last_size}x{last_size}x{last.out_channels}-output:{last_size}x{last_size}x1280")
                + mean(f"Logits-input:{last_size}x{last_size}x1280-output:1000"))
    return Profile(name=name, device="Google Pixel 1 (ProxylessNAS mobile latency table)",
                   constant_ms=constant, tables=tables)


def load_own_json(raw: dict, name: str) -> Profile:
    """Our format (Profile.save): named variants per layer, optional SE factors and measurements."""
    name = raw.get("name", name)
    known = {"format", "name", "device", "unit", "input_size", "width", "constant_ms", "layers", "se_factors",
             "se50_factors", "measured"}
    if set(raw) - known:
        raise UsageError(f"profile {name}: unknown fields {sorted(set(raw) - known)}; valid: {sorted(known)}")
    for req in ("constant_ms", "layers"):
        if req not in raw:
            raise UsageError(f"profile {name}: missing field {req!r}")
    tables = {_layer_key(name, i): _parse_variants(name, i, row) for i, row in raw["layers"].items()}
    factors = lambda key: {(_layer_key(name, i), *v): s for i, row in raw.get(key, {}).items()
                           for v, s in _parse_variants(name, i, row).items()}
    se, se50 = factors("se_factors"), factors("se50_factors")   # se50_factors: optional, added later
    if not isinstance(raw["constant_ms"], (int, float)):
        raise UsageError(f"profile {name}: constant_ms must be a number, got {raw['constant_ms']!r}")
    return Profile(name=name, device=raw.get("device", "unknown"), constant_ms=float(raw["constant_ms"]),
                   tables=tables, se_factors=se, se50_factors=se50, input_size=int(raw.get("input_size", 224)),
                   width=float(raw.get("width", 1.0)), unit=raw.get("unit", "ms"), measured=raw.get("measured"))


def list_profiles() -> list[str]:
    """Names of the bundled profiles."""
    return list(BUNDLED)


def load_profile(name_or_path: str | Path) -> Profile:
    """A bundled profile by name, or a profile file (.json of either format, .yaml ProxylessNAS)."""
    import yaml

    s = str(name_or_path)
    if s in BUNDLED:
        path, name = BUNDLED_DIR / BUNDLED[s], s
    else:
        path = Path(s).expanduser()
        name = path.stem
        if not path.is_file():
            raise UsageError(f"unknown device profile {s!r} (not a bundled name nor a file); valid choices: "
                             f"{', '.join(BUNDLED)} or a profile file")
    is_yaml = path.suffix in (".yaml", ".yml")
    try:
        text = path.read_text()
        raw = yaml.safe_load(text) if is_yaml else json.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as err:
        raise UsageError(f"profile {path}: cannot read it ({str(err).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise UsageError(f"profile {path}: expected a mapping at the top level, got {type(raw).__name__}")
    if is_yaml:
        return load_proxyless_yaml(raw, name)
    if "format" in raw:
        if raw["format"] != FORMAT:
            raise UsageError(f"profile {path}: unknown format {raw['format']!r}; valid: {FORMAT}")
        return load_own_json(raw, name)
    return load_single_path_json(raw, name)
