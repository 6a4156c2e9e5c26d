"""Headless Chromium, for a picture of a report (`python -m automl.report DIR --screenshot PNG`).

The report's figures are drawn by plotly.js in the browser, so a picture of them needs one; Debian's
`chromium` package is enough. `--virtual-time-budget` lets the page's scripts run (plotly draws after
load) before the picture is taken; a throw-away profile folder keeps runs from sharing state.
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from searchers.errors import UsageError
from searchers.result import atomic_write

NAMES = ("chromium", "chromium-browser", "google-chrome")


def find_chromium() -> str:
    """The path of a Chromium on PATH, or a one-line UsageError saying how to get one."""
    found = next((path for path in map(shutil.which, NAMES) if path), None)
    if found is None:
        raise UsageError(f"a screenshot needs headless Chromium and none is on PATH (looked for {', '.join(NAMES)}; "
                         "Debian: apt-get install chromium)")
    return found


def window_size(text: str) -> tuple[int, int]:
    """"W,H" in pixels, each at least 100, or a one-line UsageError."""
    try:
        width, height = (int(v) for v in text.split(","))
    except ValueError:
        raise UsageError(f"window size must be W,H in pixels, e.g. 1200,1600; got {text!r}") from None
    if width < 100 or height < 100:
        raise UsageError(f"window size must be at least 100,100; got {text!r}")
    return width, height


def screenshot(page: str | Path, png: str | Path, *, width: int = 1200, height: int = 1600,
               timeout: float = 180) -> Path:
    """A PNG of the top `width` x `height` pixels of `page` (an HTML file) as Chromium draws it; the
    PNG is written whole or not at all."""
    chromium, uri = find_chromium(), Path(page).resolve().as_uri()

    def shoot(tmp: str) -> None:
        with tempfile.TemporaryDirectory(prefix="chromium-") as scratch:
            shot = Path(scratch) / "shot.png"   # Chromium picks the format by the name's ending
            r = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                                "--disable-background-networking", "--hide-scrollbars",
                                f"--user-data-dir={scratch}/profile", "--virtual-time-budget=20000",
                                f"--window-size={width},{height}", f"--screenshot={shot}", uri],
                               capture_output=True, text=True, timeout=timeout)
            if r.returncode != 0 or not shot.is_file() or shot.stat().st_size == 0:
                errors = [line for line in r.stderr.splitlines() if "dbus" not in line]   # D-Bus noise: harmless
                raise RuntimeError(f"chromium made no screenshot (exit {r.returncode}): {' / '.join(errors)[-500:]}")
            shutil.copyfile(shot, tmp)

    return atomic_write(png, shoot)
