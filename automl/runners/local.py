"""In-process runner: ask, run the search, tell, one trial at a time. No Ray; same trial code."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..solvers.base import Solver
from ..study import StudyConfig, TrialRow, checkpoint_path, observation, run_trial


def run_local(config: StudyConfig, solver: Solver, *, max_trials: int, on_row: Callable[[TrialRow], None],
              trial_fn: Callable[..., TrialRow] = run_trial) -> int:
    """Run up to `max_trials` trials; returns how many ran. `trial_fn` lets the replay runner answer;
    it takes run_trial's `result_dir` and `checkpoint` (a trial function without state ignores it)."""
    n = 0
    while n < max_trials:
        proposal = solver.ask()
        if proposal is None:
            break
        row = trial_fn(config, proposal, result_dir=Path(config.out) / "trials" / f"{proposal.trial_id:04d}",
                       checkpoint=checkpoint_path(config, proposal.trial_id))
        on_row(row)   # the row first: a study killed between the two tells the row's trial on resume
        solver.tell(observation(config, row))
        n += 1
    return n
