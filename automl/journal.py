"""The solver's journal (OUT/journal.jsonl): every ask and tell of a study's solver, in the order they
happened, so that a study killed at any moment (kill -9 included) resumes as if it never stopped.

A solver's next proposal depends on the whole sequence of its asks and tells: BO's pending points,
TPE's running trials, a seeded stream drawn once per ask. Re-telling only the finished trials (what
a resume did before) gives the solver another history: BO re-proposed its initial design, and the
trials that were running when the driver died were asked again under new ids. Replaying the journal
instead rebuilds the same solver state: a fresh solver with the study's seed is asked and told exactly
as before, each replayed ask must give the proposal the journal recorded, and the proposals asked but
never told (trials that were running) go to the runner first, under their own ids, where they
continue from their last epoch checkpoint (study.run_trial).

With concurrency 1 the sequence is fixed by the study, so a resumed study ends with the trials of the
uninterrupted one. With more trials at once, the order of tells follows the order in which trials
finish, which is timing: the journal replays the order of the run that was interrupted, and the rest
follows the resumed run's timing, as any run's would.

One JSON object per line, appended and fsynced before the caller goes on; a line torn by a kill
mid-write is the last one and is dropped on reading (its event is redone: an ask is asked again, and
gives the same proposal; a tell's row is read from trials.csv). Each ask and tell carries its
wall-clock time `t` (seconds since the epoch): the study's timeline, when each trial was asked and
told (benchmarks/overhead.py reads its idle slots from it); the replay ignores it.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Callable

from .solvers.base import Observation, Proposal, Solver

JOURNAL = "journal.jsonl"


def _proposal_json(p: Proposal) -> dict:
    return {"trial_id": p.trial_id, "params": p.params, "fidelity": p.fidelity, "info": p.info}


def _same(a: Proposal, b: Proposal) -> bool:
    return (a.trial_id, a.fidelity, sorted(a.params)) == (b.trial_id, b.fidelity, sorted(b.params)) and \
        all(math.isclose(a.params[k], b.params[k], rel_tol=1e-9, abs_tol=1e-12) for k in a.params)


class Journal:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def events(self) -> list[dict]:
        if not self.path.exists():
            return []
        events = []
        for line in self.path.read_text().splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:   # torn by a kill mid-write: only ever the last line
                break
        return events

    def repair(self) -> None:
        """Cut a last line torn by a kill mid-write, before anything is appended after it."""
        data = self.path.read_bytes() if self.path.exists() else b""
        if data and not data.endswith(b"\n"):
            with open(self.path, "r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)

    def append(self, event: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(event) + "\n")
            f.flush()
            os.fsync(f.fileno())


class JournaledSolver:
    """The study's solver as the runners see it: proposals left running by an interrupted run come
    first, then the solver's own; every ask and tell is written to the journal."""

    def __init__(self, solver: Solver, journal: Journal, pending: list[Proposal] = ()):
        self.solver, self.journal, self.pending = solver, journal, list(pending)
        self.open = {p.trial_id for p in self.pending}   # asked, not yet told

    def ask(self) -> Proposal | None:
        if self.pending:
            return self.pending.pop(0)
        p = self.solver.ask()
        if p is not None:
            self.journal.append({"ask": _proposal_json(p), "t": time.time()})
            self.open.add(p.trial_id)
        return p

    def tell(self, obs: Observation) -> None:
        self.solver.tell(obs)
        self.journal.append({"tell": obs.trial_id, "t": time.time()})
        self.open.discard(obs.trial_id)

    def __getattr__(self, name):   # everything else (budget, history, capabilities) is the solver's
        return getattr(self.solver, name)


def restore(solver: Solver, journal: Journal, rows: dict[int, Observation], lost: Callable[[Proposal], Observation]) -> list[Proposal]:
    """Bring a fresh `solver` (the study's seed) to where the journal left it; returns the proposals
    asked and never told, in the order they were asked.

    `rows`: the observation of every trial in trials.csv, by trial id. A tell in the journal is told
    with its row's observation; a row whose tell the journal lacks (killed between the two writes) is
    told after the replay, in trial order, as it would have been next. `lost(proposal)` returns the
    observation of a trial the journal says was told but trials.csv lacks (killed between the solver's
    tell and the row's write: only a failure Ray reports in two steps), and records its row.
    A study written before the journal existed has none: its rows are told in trial order (the old
    resume: the same results, not the same history) and journaled as such ("told" events)."""
    journal.repair()
    events = journal.events()
    if not events:   # rows of a study from before the journal: told as they are, and journaled so
        for tid in sorted(rows):
            journal.append({"told": tid, "fidelity": rows[tid].fidelity})
        events = journal.events()
    asked: dict[int, Proposal] = {}
    differs = []
    for e in events:
        if "told" in e:
            solver.charge(e["fidelity"], e["told"])
            solver.tell(rows[e["told"]])
        elif "ask" in e:
            rec = Proposal(**e["ask"])
            mine = solver.ask()
            if mine is None or not _same(mine, rec):
                differs.append(rec.trial_id)
            asked[rec.trial_id] = rec
        else:
            tid = e["tell"]
            p = asked.pop(tid)
            solver.tell(rows[tid] if tid in rows else lost(p))
    if differs:   # solver code, options or a library changed since: its state is near, not the same
        print(f"note: the solver replayed its journal with different proposals for trials {differs}; "
              "the study continues from the recorded ones", file=sys.stderr, flush=True)
    for tid in sorted(set(asked) & set(rows)):
        p = asked.pop(tid)
        solver.tell(rows[tid])
        journal.append({"tell": tid})
    return list(asked.values())


def resume_solver(solver: Solver, config, table) -> JournaledSolver:
    """The study's solver, brought to where the study in `config.out` stopped (nothing, for a new
    study) and journaling from here on; `table` (trials.csv) gets a failed row for a trial whose row a
    kill prevented (see `restore`)."""
    from .study import failed_row, observation

    def lost(p: Proposal) -> Observation:
        row = failed_row(config, p, "the study stopped before this trial's error was recorded")
        table.append(row)
        return observation(config, row)

    journal = Journal(Path(config.out) / JOURNAL)
    pending = restore(solver, journal, {r.trial_id: observation(config, r) for r in table.rows}, lost)
    return JournaledSolver(solver, journal, pending)


def stopped_early(solver: JournaledSolver) -> bool:
    """Whether a run ended before its study did: Ray Tune ends its run on Ctrl-C without raising, and
    leaves the trials it stopped asked but never told (their checkpoints kept). Unspent budget is no
    sign: a solver may end before it (a grid's last point, BOHB's last bracket)."""
    return bool(solver.open)
