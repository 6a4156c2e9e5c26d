"""The compact terminal view of a running study: one line per finished trial and one progress line.

Ray Tune's own output is a configuration box and a result box per trial every 30 s, about 900 lines
for an 8-trial study, with the few useful numbers at the end (issue 13). This view prints instead:

    trial 3  lam=0.0213  4 ep  72.31 ms  val 0.9312  reward 0.9312  48 s
    [12/32 epochs] trials 3 done, 2 running, 0 failed | best reward 0.9312 | 2m05s elapsed, ~3m30s left

The progress line counts search epochs against the study's budget (what the solvers spend, Eq. 19 is
paid per trial): finished trials count their fidelity, running ones the epochs they have reported.
On a terminal it is one line redrawn in place, below the trial lines; in a log (not a terminal) it
is printed once after each finished trial, so a log stays a few lines per trial too.

It is fed through hooks, never by parsing output: every runner passes it the rows it records
(`finished`); the Ray runner adds Ray Tune's own callback events (`ray_callback`: trial start,
per-epoch results, end), the local runner tells it when a trial starts.
"""
from __future__ import annotations

import sys
import time
from typing import Callable, Iterable, TextIO

from .study import StudyConfig, TrialRow


def duration(seconds: float) -> str:
    """42s, 3m05s, 1h02m: short enough for a status line, precise enough for an estimate."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def format_row(row: TrialRow) -> str:
    """One finished trial: its tuned values, fidelity, cost, validation accuracy, Eq. 19 reward, wall time."""
    params = "  ".join(f"{k}={v:.4g}" for k, v in row.params.items())
    head = f"trial {row.trial_id}  {params}  {row.fidelity} ep"
    if row.status != "ok":
        return f"{head}  failed: {row.error.split(' | ')[0][:120]}  {duration(row.wall_s)}"
    cost = f"{row.runtime_ms:.2f} ms" if row.runtime_ms is not None else f"{(row.flops or 0) / 1e6:.2f} MFLOPs"
    return f"{head}  {cost}  val {row.val_acc:.4f}  reward {row.reward:.4f}  {duration(row.wall_s)}"


class LiveView:
    """What a study prints while it runs. `done`: rows of an interrupted study being resumed."""

    REDRAW_S = 1.0   # a redraw per second keeps the elapsed time moving without flooding a slow terminal

    def __init__(self, config: StudyConfig, *, done: Iterable[TrialRow] = (), stream: TextIO | None = None,
                 tty: bool | None = None, clock: Callable[[], float] = time.monotonic, prefix: str = ""):
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty() if tty is None else tty
        self.config, self.clock, self.prefix = config, clock, prefix
        # A study stops at its trial count or its epoch budget, whichever comes first.
        self.max_epochs = min(config.budget, config.trials * config.fidelity)
        self.rows = list(done)
        self.resumed_epochs = self.done_epochs = sum(r.fidelity for r in self.rows)
        self.running: dict[int, int] = {}   # trial id -> epochs it has reported
        self.start = self.clock()
        self.drawn_at: float | None = None  # when the in-place line was last drawn (terminal only)

    # -- events -------------------------------------------------------------------------------------
    def begin(self, at_a_time: int = 1) -> None:
        """What the study is about to do, in one line (and how much a resumed one has done).
        `at_a_time`: trials the runner runs side by side (the local runner: one)."""
        c = self.config
        unit = "ms" if c.target_metric == "runtime_ms" else "MFLOPs"
        resumed = f"; resuming after {len(self.rows)} trials, {self.done_epochs} epochs" if self.rows else ""
        self._print(f"{c.searcher}: tuning {', '.join(c.space().names)} toward {c.target:g} {unit} with {c.solver}, "
                    f"up to {c.trials} trials / {self.max_epochs} search epochs, {at_a_time} at a time{resumed}")
        self.start = self.clock()

    def started(self, trial_id: int) -> None:
        self.running.setdefault(trial_id, 0)
        self.tick(force=True)

    def epoch(self, trial_id: int, epochs_done: int) -> None:
        self.running[trial_id] = epochs_done
        self.tick(force=True)

    def stopped(self, trial_id: int) -> None:
        """The runner says the trial ended; its row (ok or failed) comes through `finished`."""
        self.running.pop(trial_id, None)

    def finished(self, row: TrialRow) -> None:
        self.running.pop(row.trial_id, None)
        self.rows.append(row)
        self.done_epochs += row.fidelity
        self._print(format_row(row))
        if not self.tty:  # a log gets the progress line once per trial; a terminal has it live
            self._print(self.status())
        self.tick(force=True)

    def close(self) -> None:
        """Leave the last progress line on the terminal, followed by a newline."""
        if self.tty and self.drawn_at is not None:
            self.stream.write("\r\033[K" + self.prefix + self.status() + "\n")
            self.stream.flush()
            self.drawn_at = None

    # -- what is shown --------------------------------------------------------------------------------
    @property
    def spent(self) -> int:
        return self.done_epochs + sum(self.running.values())

    def status(self) -> str:
        ok = [r for r in self.rows if r.status == "ok" and r.reward is not None]
        failed = len(self.rows) - len(ok)
        best = f"best reward {max(r.reward for r in ok):.4f}" if ok else "best reward -"
        elapsed = self.clock() - self.start
        this_session = self.spent - self.resumed_epochs
        left = max(0, self.max_epochs - self.spent)
        # Epochs so far at this session's pace (trials run side by side are in the pace already).
        eta = f"~{duration(elapsed * left / this_session)} left" if this_session > 0 else "~? left"
        width = len(str(self.max_epochs))
        return (f"[{self.spent:>{width}}/{self.max_epochs} epochs] trials {len(self.rows)} done, "
                f"{len(self.running)} running, {failed} failed | {best} | {duration(elapsed)} elapsed, {eta}")

    def tick(self, force: bool = False) -> None:
        """Redraw the live line on a terminal (at most once a second unless `force`)."""
        if not self.tty:
            return
        now = self.clock()
        if force or self.drawn_at is None or now - self.drawn_at >= self.REDRAW_S:
            self.stream.write("\r\033[K" + self.prefix + self.status())
            self.stream.flush()
            self.drawn_at = now

    def _print(self, line: str) -> None:
        clear = "\r\033[K" if self.tty and self.drawn_at is not None else ""
        self.stream.write(clear + self.prefix + line + "\n")
        self.stream.flush()
        self.drawn_at = None

    # -- hooks of the runners ---------------------------------------------------------------------------
    def local_trial_fn(self, trial_fn: Callable[..., TrialRow]) -> Callable[..., TrialRow]:
        """The local runner's trial function, telling the view when each trial starts."""
        def run(config, proposal, **kw):
            self.started(proposal.trial_id)
            return trial_fn(config, proposal, **kw)
        return run

    def ray_callback(self):
        """A ray.tune Callback feeding this view from Ray Tune's events (imported only with Ray)."""
        from ray.tune import Callback

        from .runners.ray_tune import PROPOSAL, ROW

        view = self

        def our_id(trial) -> int | None:
            return trial.config[PROPOSAL]["trial_id"]   # the proposal the runner sent (runners/ray_tune.py)

        class LiveViewCallback(Callback):
            def on_trial_start(self, iteration, trials, trial, **info):
                view.started(our_id(trial))

            def on_trial_result(self, iteration, trials, trial, result, **info):
                if ROW not in result and "epoch" in result:   # per-epoch reports, not the final row
                    view.epoch(our_id(trial), int(result["epoch"]))

            def on_trial_complete(self, iteration, trials, trial, **info):
                view.stopped(our_id(trial))

            def on_trial_error(self, iteration, trials, trial, **info):
                view.stopped(our_id(trial))

            def on_step_end(self, iteration, trials, **info):
                view.tick()

        return LiveViewCallback()
