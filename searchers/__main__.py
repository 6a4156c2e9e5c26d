"""Command line of the inner loop.

    python -m searchers run single-path --lam 0.02 --epochs 8 --data digits --out runs/sp
    python -m searchers run random --target-ms 80 --epochs 4 --out runs/rs
    python -m searchers info --profile pixel1-single-path
    python -m searchers info --arch "mbconv w1 i32 n10 | k5e6 skip ... | ..."   # price one architecture
    python -m searchers profile --device cpu --threads 1 --image-size 224 --out my-cpu.json
    python -m searchers measure runs/sp          # time model.onnx here; predicted vs measured if the
                                                 # profile was measured on this machine

Bad input prints one line `error: ...` and exits with code 2, before anything is written.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import typing
from pathlib import Path

import torch

from . import RunSettings, get_searcher, list_searchers, load_task
from .errors import DivergedError, UsageError
from .result import atomic_write, check_writable

CHECKPOINT = ".checkpoint.pt"


def _add_params_flags(parser: argparse.ArgumentParser, params_cls) -> None:
    """One --flag per field of the searcher's Params dataclass (e.g. --lam, --variant, --mu)."""
    hints = typing.get_type_hints(params_cls)
    for f in dataclasses.fields(params_cls):
        kind = hints[f.name]
        conv = kind if kind in (int, float, str) else float
        if kind is bool:
            conv = lambda s: s.lower() in ("1", "true", "yes")
        parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=conv, default=f.default,
                            help=f"(default {f.default})")


def _settings_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--data", default="digits", help="digits | cifar10:DIR | ImageFolder DIR")
    p.add_argument("--profile", default="pixel1-single-path")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=RunSettings.batch_size)
    p.add_argument("--width", type=float, default=None,
                   help="channel multiplier (default 0.25 on digits, where it fits a laptop CPU; else 1.0)")
    p.add_argument("--data-limit", type=int, default=None,
                   help="at most N images of each split, a stratified subset (CPU-sized runs)")
    p.add_argument("--target-ms", type=float, default=None)
    p.add_argument("--out", required=True)
    p.add_argument("--resume", action="store_true", help="continue from DIR/.checkpoint.pt")
    p.add_argument("--no-onnx", action="store_true")


def cmd_run(name: str, argv: list[str]) -> int:
    from tqdm import tqdm

    cls = get_searcher(name)
    p = argparse.ArgumentParser(prog=f"python -m searchers run {name}")
    _settings_flags(p)
    _add_params_flags(p, cls.Params)
    args = p.parse_args(argv)
    fields = [f.name for f in dataclasses.fields(cls.Params)]
    params = cls.make_params(**{k: getattr(args, k) for k in fields})
    settings = RunSettings(epochs=args.epochs, seed=args.seed, device=args.device, batch_size=args.batch_size,
                           width=args.width if args.width is not None else (0.25 if args.data == "digits" else 1.0),
                           profile=args.profile, target_ms=args.target_ms)
    if args.target_ms is not None or cls.needs_runtime_target:
        cls.check_target(target_ms=args.target_ms, profile=args.profile)
    out = Path(args.out)
    check_writable(out)
    task = load_task(args.data, limit=args.data_limit)   # refuses a data spec that cannot make a task first
    searcher = cls(params, task, settings)
    ckpt = out / CHECKPOINT
    if args.resume and ckpt.exists():
        searcher.load_state_dict(torch.load(ckpt, weights_only=True))   # tensors and plain containers only
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=settings.epochs, initial=searcher.epoch, desc=name, unit="epoch", file=sys.stderr)

    def on_epoch(m):
        atomic_write(ckpt, lambda p: torch.save(searcher.state_dict(), p))
        rt = f"{m.runtime_ms:.1f}ms" if m.runtime_ms is not None else "-"
        bar.set_postfix_str(f"loss {m.loss:.3f} val {m.val_acc:.3f} R {rt} {m.flops / 1e6:.1f}MMAC")
        bar.update(1)

    try:
        result = searcher.run(on_epoch)
    except BaseException:
        bar.close()
        if created and not args.resume:
            shutil.rmtree(out, ignore_errors=True)
        raise
    bar.close()
    paths = result.save(out, onnx=not args.no_onnx)
    ckpt.unlink(missing_ok=True)
    summary = {k: v for k, v in result.to_json().items() if k not in ("history", "val_correct")}
    summary["files"] = {k: str(v) for k, v in paths.items()}
    print(json.dumps(summary, indent=2))
    return 0


def _arch_argument(value: str) -> str:
    """--arch takes the string itself, or a result.json (or the folder holding one) to read it from."""
    path = Path(value).expanduser()
    if "|" not in value and (path.is_file() or (path / "result.json").is_file()):
        path = path if path.is_file() else path / "result.json"
        try:
            return json.loads(path.read_text())["arch"]
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
            raise UsageError(f"--arch {value}: not a result.json with an 'arch' field") from None
    return value


def cmd_info(argv: list[str]) -> int:
    from .cost import load_profile
    from .cost.runtime import runtime_range

    p = argparse.ArgumentParser(prog="python -m searchers info")
    p.add_argument("--profile", default="pixel1-single-path")
    p.add_argument("--arch", help="price an architecture: its string (as in result.json), or a result.json / "
                                  "result folder; prints runtime per layer, MACs and parameters")
    p.add_argument("--json", action="store_true", help="with --arch: print the price as JSON")
    args = p.parse_args(argv)
    prof = load_profile(args.profile)
    if args.arch is not None:
        from .cost.price import price
        from .spaces.mbconv import MBConvArch

        priced = price(MBConvArch.parse(_arch_argument(args.arch).strip()), prof)
        print(json.dumps(priced.to_json(), indent=2) if args.json else "\n".join(priced.lines()))
        return 0
    lo, hi = runtime_range(prof)
    print(json.dumps({"profile": prof.name, "device": prof.device, "input_size": prof.input_size,
                      "runtime_ms_min": round(lo, 2), "runtime_ms_max": round(hi, 2),
                      "constant_ms": prof.constant_ms, "se": se_pricing(prof), "searchers": list_searchers()},
                     indent=2))
    return 0


def se_pricing(prof) -> str:
    """How the profile prices SE (Eq. 14), in words: a profile without factors makes SE free."""
    if not prof.se_factors:
        return "no SE factors measured: SE 0.25 and 0.5 cost 1.0x (free)"
    return f"SE 0.25 and SE 0.5 {'measured apart' if prof.se50_factors else 'share one factor'} (Eq. 14)"


def cmd_profile(argv: list[str]) -> int:
    from .cost.measure import profile_device

    p = argparse.ArgumentParser(prog="python -m searchers profile")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--repeats", type=int, default=5, help="timed runs per pass")
    p.add_argument("--passes", type=int, default=4, help="shuffled passes; each network keeps its median")
    p.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                   help="cpu: thread CPU time, robust on a shared machine (CPU, 1 thread only)")
    p.add_argument("--rounds", type=int, default=2, help="probe rounds: each layer variant (k, e, SE ratio) "
                                                         "is timed in this many probe networks")
    p.add_argument("--no-se", action="store_true", help="skip the SE 0.25 / 0.5 probes (SE then costs 1.0x)")
    p.add_argument("--validate", type=int, default=10, help="random networks to validate the profile on")
    p.add_argument("--name", help="the profile's name (default: device, threads and image size)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    check_writable(Path(args.out).parent if Path(args.out).suffix else Path(args.out))
    profile_device(device=args.device, threads=args.threads, image_size=args.image_size, width=args.width,
                   repeats=args.repeats, passes=args.passes, clock=args.clock, validate_n=args.validate,
                   rounds=args.rounds, se=not args.no_se, name=args.name, out=args.out)
    return 0


def cmd_measure(argv: list[str]) -> int:
    from .cost.delivered import MEASURED, check_folder, measure_delivered, write_measured

    p = argparse.ArgumentParser(prog="python -m searchers measure",
                                description="time DIR/model.onnx with ONNX Runtime on this machine (1 thread and "
                                            "all threads) and, when the profile was measured on this machine, "
                                            f"compare with its prediction; writes DIR/{MEASURED}")
    p.add_argument("dir", help="a result folder: result.json and model.onnx (python -m searchers run ... --out DIR)")
    p.add_argument("--profile", default=None, help="the profile to compare with (default: the result's own)")
    p.add_argument("--repeats", type=int, default=20, help="timed runs; the median is kept")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs before them")
    args = p.parse_args(argv)
    check_folder(args.dir)
    check_writable(args.dir)
    timing = measure_delivered(args.dir, profile=args.profile, repeats=args.repeats, warmup=args.warmup)
    print("\n".join(timing.lines()))
    print(f"wrote {write_measured(args.dir, timing)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    usage = "usage: python -m searchers {run NAME | info | profile | measure DIR} [flags]"
    try:
        if not argv or argv[0] in ("-h", "--help"):
            print(usage + f"\nsearchers: {', '.join(list_searchers())}")
            return 0
        cmd, rest = argv[0], argv[1:]
        if cmd == "run":
            if not rest or rest[0].startswith("-"):
                raise UsageError(f"run needs a searcher name; valid choices: {', '.join(list_searchers())}")
            return cmd_run(rest[0], rest[1:])
        if cmd == "info":
            return cmd_info(rest)
        if cmd == "profile":
            return cmd_profile(rest)
        if cmd == "measure":
            return cmd_measure(rest)
        raise UsageError(f"unknown command {cmd!r}; valid choices: run, info, profile, measure")
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except DivergedError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
