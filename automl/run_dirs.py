"""Where a study writes when the user names no --out: a new folder per run, and a `latest` link.

    runs/tune-lambda/2026-11-29_084243/    one run (study.json, trials.csv, best/, report.html, ...)
    runs/tune-lambda/2026-11-29_091502/    the next one
    runs/tune-lambda/latest -> 2026-11-29_091502

So running the main command twice just works (an explicit --out stays strict: it refuses a folder
that holds a study unless --resume), and `--resume` alone continues the last run, interrupted or not.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from searchers.errors import UsageError

LATEST = "latest"


def new_run_dir(root: str | os.PathLike, now: float | None = None) -> Path:
    """A fresh folder name root/YYYY-mm-dd_HHMMSS (local time; -2, -3, ... when taken). Creates nothing:
    the study creates it once its input has been checked."""
    root = Path(root)
    stamp = time.strftime("%Y-%m-%d_%H%M%S", time.localtime(now))
    path, n = root / stamp, 1
    while path.exists() or path.is_symlink():
        n += 1
        path = root / f"{stamp}-{n}"
    return path


def latest_run_dir(root: str | os.PathLike) -> Path:
    """The run that root/latest points at, for --resume without --out."""
    root = Path(root)
    link = root / LATEST
    if link.is_dir():
        return link.resolve()
    if (root / "study.json").exists():  # a study written before runs had their own folders
        return root
    raise UsageError(f"--resume without --out continues {link}, which does not exist (no earlier run there); "
                     "pass --out DIR to resume another study")


def link_latest(run_dir: str | os.PathLike) -> Path:
    """Point run_dir's parent/latest at run_dir: a relative link (the runs folder may move), swapped
    in atomically so a reader never finds it missing."""
    run_dir = Path(run_dir)
    link = run_dir.parent / LATEST
    tmp = run_dir.parent / f".{LATEST}.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    os.symlink(run_dir.name, tmp, target_is_directory=True)
    os.replace(tmp, link)
    return link
