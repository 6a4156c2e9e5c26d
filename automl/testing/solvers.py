"""Contract every registered solver passes (run by tests/automl/test_solvers.py), without Ray, in
seconds (the comparison with random search over 100 seeds, marked slow, in several minutes), on a
synthetic reward of lambda with a known maximum.

Solvers are built exactly as `studies/tune_lambda.py` builds them with no flags: space, budget and
seed, no options (their defaults are sized to the budget), in the CLI's default study (SPACE,
BUDGET, CONCURRENCY; tests/studies checks that these match the CLI's flags).

To run it, subclass SolverContract in a test module (`class TestSolverContract(SolverContract): pass`);
its `solver_name` fixture walks over every name in the registry, so a new solver is covered on
registration. The loop `run` stands in for a runner: it keeps `concurrency` trials in flight (asks
ahead of tells, as Ray Tune does) and answers with `synthetic_reward`.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import random
from pathlib import Path

import numpy as np
import pytest

from automl.solvers import Observation, Proposal, Solver, get_solver, list_solvers, make_solver
from automl.spaces import Param, Space

LAMBDA = Param(name="lam", low=1e-3, high=1.0, log=True)   # Single-Path NAS's lambda range
# The CLI's default study: full trials of 4 search epochs, multi-fidelity solvers down to 2, 8 trials'
# worth of epochs, two trials in flight.
SPACE = Space(params=(LAMBDA,), min_fidelity=2, max_fidelity=4)
TRIALS = 8
BUDGET = TRIALS * SPACE.max_fidelity   # 32 epochs: --budget-epochs' default, trials x fidelity
CONCURRENCY = 2

BEST_UNIT = 0.6            # optimum in LAMBDA.to_unit scale: lambda = 1e-3 * 1000**0.6 ~ 0.063
WIDTH = 0.15               # of the peak, same scale (a factor 2.8 of lambda either side falls to 1/e)
OVERSHOOT = 0.05           # Fig. 9 right: with fewer epochs a larger lambda looks best
LOW_FIDELITY_LOSS = 0.3    # fewer search epochs, lower accuracy: the peak is 0.7 at min_fidelity

BASELINE = "random"        # what a solver that learns from results must beat
SEEDS = range(100)         # of the comparison with BASELINE. Fewer seeds give a median too noisy
                           # to compare: random search's is 0.98 on seeds 0-9, 0.974 on 0-19 (the top
                           # tail of its 20-seed medians), 0.95 on 0-29, 0-99 and 0-199


def synthetic_reward(params: dict[str, float], epochs: int) -> float:
    """A smooth peak in log lambda with maximum 1.0 at BEST_UNIT and max_fidelity: Eq. 19 rises with
    lambda while the network is slower than the target and falls once it is faster and less accurate.
    A lower fidelity sees a distorted version: lower (LOW_FIDELITY_LOSS) and shifted to larger lambda
    (OVERSHOOT). Random search's 8 trials land within the peak's width most of the time (median best
    0.95 over 100 seeds) but not on its top: learning shows as getting closer."""
    lag = (SPACE.max_fidelity - epochs) / (SPACE.max_fidelity - SPACE.min_fidelity)
    u = LAMBDA.to_unit(params[LAMBDA.name])
    return (1 - LOW_FIDELITY_LOSS * lag) * math.exp(-((u - BEST_UNIT - OVERSHOOT * lag) / WIDTH) ** 2)


TARGET = 1.0               # RT of Eq. 19, in the synthetic cost's unit
COST_SLOPE = 1.44          # ln(131.5 / 30.6): the default profile's runtimes across lambda's range


def synthetic_outcome(params: dict[str, float], epochs: int) -> tuple[float, float]:
    """(accuracy, cost) whose Eq. 19 reward is synthetic_reward, for solvers that model the parts:
    the cost falls exponentially in log lambda and meets TARGET at the reward's peak; over the
    target, accuracy is what Eq. 19 divides by R / RT."""
    lag = (SPACE.max_fidelity - epochs) / (SPACE.max_fidelity - SPACE.min_fidelity)
    u = LAMBDA.to_unit(params[LAMBDA.name])
    cost = TARGET * math.exp(COST_SLOPE * (BEST_UNIT + OVERSHOOT * lag - u))
    return synthetic_reward(params, epochs) * max(1.0, cost / TARGET), cost


def synthetic_observation(p: Proposal, *, failed: bool = False) -> Observation:
    """A solver's answer to `p`: Eq. 19's reward and its parts, or a failure."""
    if failed:
        return Observation(params=p.params, fidelity=p.fidelity, reward=None, trial_id=p.trial_id,
                           target=TARGET)
    accuracy, cost = synthetic_outcome(p.params, p.fidelity)
    # synthetic_reward itself, which Eq. 19 of the parts equals up to rounding
    return Observation(params=p.params, fidelity=p.fidelity, reward=synthetic_reward(p.params, p.fidelity),
                       trial_id=p.trial_id, accuracy=accuracy, cost=cost, target=TARGET)


def new_solver(name: str, *, seed: int = 0, budget: int = BUDGET) -> Solver:
    """As the CLI builds it: no solver options."""
    return make_solver(name, SPACE, budget_epochs=budget, seed=seed)


def run(solver: Solver, *, concurrency: int = 1, fails=lambda p: False) -> list[tuple[Proposal, Observation]]:
    """Drive `solver` until its budget is spent, `concurrency` trials in flight, the oldest answered
    first; trials for which `fails(proposal)` is true fail (reward None). Returns (proposal,
    observation) pairs in the order told."""
    return run_until(solver, concurrency=concurrency, fails=fails)[0]


def run_until(solver: Solver, *, concurrency: int = 1, fails=lambda p: False, tells: int | None = None):
    """`run`, stopped after `tells` tells and the asks that refill the freed places (as a runner
    refills them at once): (done, proposals still in flight)."""
    in_flight, done = [], []
    while True:
        while len(in_flight) < concurrency and (p := solver.ask()) is not None:
            in_flight.append(p)
        if not in_flight or (tells is not None and len(done) >= tells):
            break
        p = in_flight.pop(0)
        obs = synthetic_observation(p, failed=fails(p))
        solver.tell(obs)
        done.append((p, obs))
    return done, in_flight


def proposal_key(p: Proposal) -> tuple:
    return p.trial_id, tuple(sorted(p.params.items())), p.fidelity


def delivered(done: list[tuple[Proposal, Observation]], target: float = TARGET):
    """The trial a study would deliver from these results: the product's rule (TrialsTable.best, the
    target a hard limit, full fidelity first), on rows as the study records them; None if all failed."""
    from ..results import TrialsTable
    from ..study import TrialRow

    table = TrialsTable(Path("/nonexistent/trials.csv"), SPACE.names)   # in memory: never saved here
    table.rows = [TrialRow(trial_id=p.trial_id, solver="contract", params=dict(p.params), fidelity=p.fidelity,
                           seed=0, status="failed" if o.reward is None else "ok", val_acc=o.accuracy,
                           runtime_ms=o.cost, target=target, reward=o.reward) for p, o in done]
    return table.best(SPACE.max_fidelity, target, lambda r: r.runtime_ms)


def delivered_quality(name: str, seed: int) -> float:
    """The default study's outcome: the true full-fidelity reward of the trial it would deliver. A
    multi-fidelity solver is not credited for a lambda it only ran at fewer epochs."""
    solver = new_solver(name, seed=seed)
    best = delivered(run(solver, concurrency=CONCURRENCY))
    return 0.0 if best is None else synthetic_reward(best.params, SPACE.max_fidelity)


@functools.cache
def median_quality(name: str) -> float:
    return float(np.median([delivered_quality(name, seed) for seed in SEEDS]))


class SolverContract:
    @pytest.fixture(params=list_solvers())
    def solver_name(self, request) -> str:
        return request.param

    def test_same_seed_same_proposals(self, solver_name):
        first = [proposal_key(p) for p, _ in run(new_solver(solver_name, seed=3), concurrency=2)]
        again = [proposal_key(p) for p, _ in run(new_solver(solver_name, seed=3), concurrency=2)]
        assert first == again

    def test_different_seeds_differ(self, solver_name):
        a, b = new_solver(solver_name, seed=0), new_solver(solver_name, seed=1)
        assert [a.ask().params for _ in range(3)] != [b.ask().params for _ in range(3)]

    def test_proposals_lie_in_the_space(self, solver_name):
        solver = new_solver(solver_name)
        for p, _ in run(solver, concurrency=2):
            assert set(p.params) == set(SPACE.names)
            assert LAMBDA.low <= p.params[LAMBDA.name] <= LAMBDA.high
            assert type(p.fidelity) is int   # epochs, not a numpy or normalised value
            assert solver.smallest_fidelity <= p.fidelity <= SPACE.max_fidelity

    @pytest.mark.parametrize("concurrency", [1, 3])
    def test_budget_is_never_exceeded(self, solver_name, concurrency):
        solver = new_solver(solver_name)
        done = run(solver, concurrency=concurrency)
        assert sum(p.fidelity for p, _ in done) == solver.spent_epochs <= BUDGET
        # ask said None only once the budget could not pay for another trial, and keeps saying it
        assert solver.remaining() < solver.smallest_fidelity
        assert solver.ask() is None

    @pytest.mark.slow   # dragonfly's GP is pure Python: several minutes for BO and MF-BO over SEEDS
    def test_a_solver_that_learns_beats_random_search_at_the_default_budget(self, solver_name):
        """The model must pay inside the default study (8 trials), not only in long ones: the median
        over SEEDS of delivered_quality beats random search's over the same seeds."""
        if not get_solver(solver_name).learns:
            pytest.skip(f"{solver_name} does not learn from results")
        assert median_quality(solver_name) > median_quality(BASELINE)

    def test_failed_trials_are_survived(self, solver_name):
        """Failures are told as the worst outcome and the solver spends its whole budget; one that
        only ever fails still asks (and stays in the space) until the budget is spent. Which trial is
        delivered is TrialsTable.best's job (tests/automl/test_results.py), not the solver's."""
        solver = new_solver(solver_name)
        done = run(solver, concurrency=2, fails=lambda p: p.trial_id % 3 == 1)
        assert any(o.reward is None for _, o in done) and solver.remaining() < solver.smallest_fidelity
        assert any(o.reward is not None for _, o in done)

        all_fail = new_solver(solver_name)
        done = run(all_fail, fails=lambda p: True)
        assert all_fail.remaining() < all_fail.smallest_fidelity and sum(p.fidelity for p, _ in done) > 0

    def test_results_never_asked_for_are_learned(self, solver_name):
        """The resume path: a fresh solver is told finished trials (charged, not asked), then goes on."""
        budget = 64
        first = new_solver(solver_name, seed=4, budget=budget)
        done = []
        while first.spent_epochs < budget // 2:
            obs = synthetic_observation(first.ask())
            first.tell(obs)
            done.append(obs)
        resumed = new_solver(solver_name, seed=4, budget=budget)
        # plus results from elsewhere, without a trial id: one failed, one at the lowest fidelity
        foreign = [dataclasses.replace(synthetic_observation(Proposal(trial_id=0, params={"lam": lam},
                                                                      fidelity=fidelity), failed=failed),
                                       trial_id=None)
                   for lam, fidelity, failed in [(0.3, SPACE.max_fidelity, True), (0.05, SPACE.min_fidelity, False)]]
        for obs in done + foreign:
            resumed.charge(obs.fidelity)
            resumed.tell(obs)
        assert resumed.spent_epochs == first.spent_epochs + sum(o.fidelity for o in foreign)
        rest = run(resumed, concurrency=2)
        assert rest and min(p.trial_id for p, _ in rest) >= len(done) + len(foreign)
        assert resumed.spent_epochs <= budget and resumed.remaining() < resumed.smallest_fidelity

    @pytest.mark.parametrize("tells, row_written", [(2, True), (5, False)])
    def test_resumed_from_its_journal_it_asks_what_an_uninterrupted_run_asks(self, solver_name, tells,
                                                                              row_written, tmp_path):
        """A study killed after `tells` results, with trials in flight (`row_written`: the first of
        them had its row written, not yet told), replays its journal into a fresh solver with the same
        seed (automl/journal.py): the trials in flight go on under their ids, nothing is asked twice,
        and the whole run asks and is told exactly what the uninterrupted one is."""
        from ..journal import Journal, JournaledSolver, restore

        whole = [proposal_key(p) for p, _ in run(new_solver(solver_name, seed=5), concurrency=CONCURRENCY)]
        journal = Journal(tmp_path / "journal.jsonl")
        done, in_flight = run_until(JournaledSolver(new_solver(solver_name, seed=5), journal),
                                    concurrency=CONCURRENCY, tells=tells)
        rows = {p.trial_id: o for p, o in done}
        if row_written:
            rows[in_flight[0].trial_id] = synthetic_observation(in_flight[0])
        with open(journal.path, "a") as f:   # and the kill tore the line being written
            f.write('{"ask": {"trial_id": 9')
        fresh = new_solver(solver_name, seed=5)
        pending = restore(fresh, journal, rows, lost=lambda p: pytest.fail(f"trial {p.trial_id} lost"))
        assert [p.trial_id for p in pending] == [p.trial_id for p in in_flight[row_written:]]
        resumed = JournaledSolver(fresh, journal, pending)
        if row_written:   # the written row's trial is no longer in flight: restore told it
            done.append((in_flight[0], rows[in_flight[0].trial_id]))
        rest = run(resumed, concurrency=CONCURRENCY)
        assert [proposal_key(p) for p, _ in done + rest] == whole

    def test_global_random_state_is_left_alone(self, solver_name):
        """Seeds are real: a solver draws from its own generators, never from the caller's."""
        np.random.seed(123)
        random.seed(123)
        run(new_solver(solver_name), concurrency=2)
        after = np.random.random(), random.random()
        np.random.seed(123)
        random.seed(123)
        assert after == (np.random.random(), random.random())
