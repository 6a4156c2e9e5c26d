"""Bayesian optimization with Dragonfly, the paper's solver (Sec. VII-B, method 1): a GP fitted to the
reward of Eq. 19 over the hyperparameters, maximised through an acquisition function.

Dragonfly is driven through its own ask/tell API (EuclideanGPBandit(ask_tell_mode=True): initialise,
ask, tell([(x, y)])); Ray 2.60 has no DragonflySearch. It searches the unit cube and Param.to_unit /
from_unit map it onto the space, so log ranges (lambda) are searched in log scale. Dragonfly maximises,
like Eq. 19. Its GP code is pure Python: where its own defaults cost a second or more per ask on two
CPU cores, the defaults here differ, each saying why.
"""
from __future__ import annotations

import functools
import math
from argparse import Namespace

import numpy as np

from searchers.errors import UsageError, check_choice

from ..spaces import Space
from .base import Observation, Solver
from .compat import GlobalRandomState, import_dragonfly

ACQUISITIONS = ("ei", "ucb", "ttei", "ts", "pi", "add_ucb")   # dragonfly's gpb_acquisitions.asy
ACQ_OPT_METHODS = ("rand", "direct", "pdoo")                   # gp_bandit._domain_specific_acq_opt_set_up
HP_TUNE_CRITERIA = ("ml", "post_sampling")                      # gp_core._hp_tune_method_set_up


class BayesOpt(Solver):
    """GP bandit over the space at full fidelity (MultiFidelityBO adds the fidelity)."""

    name = "bo"

    def __init__(self, space: Space, *, budget_epochs: int, seed: int = 0,
                 init_points: int | None = None,    # None: sized to the budget (initial_design_size);
                                                    # dragonfly's ask/tell default is 5 whatever the budget
                 acq: str = "ei-ucb-ttei",          # dragonfly's Euclidean default minus add_ucb: an additive
                                                    # GP only pays in many dimensions and doubles every GP fit
                 acq_opt_method: str = "rand",      # vectorised random search; dragonfly's 'direct' falls back
                                                    # to pure-Python PDOO without Fortran (~0.3 s per ask)
                 acq_opt_max_evals: int = -1,       # -1: dragonfly's rule (2000 and up for 'rand')
                 hp_tune_criterion: str = "ml",     # marginal likelihood; dragonfly's 'ml-post_sampling' adds
                                                    # slice sampling, 2-7 s per fit here
                 hp_tune_max_evals: int = -1,       # -1: dragonfly's rule (500 and up)
                 refit_every: int = 1,              # refit GP hyperparameters after this many new results
                 min_bandwidth: float = 0.1,        # floor of the GP's length scales (unit scale): see
                                                    # floor_bandwidths; dragonfly's floor is ~0.01
                 repeat_tolerance: float = 1e-3):   # a proposal this close (unit scale, max norm) to one
                                                    # evaluated or pending at its fidelity is a repeat
                                                    # (lambda within 0.7%): see _is_repeat
        super().__init__(space, budget_epochs=budget_epochs, seed=seed)
        for part in acq.split("-"):
            check_choice("dragonfly acquisition", part, ACQUISITIONS)
        check_choice("dragonfly acquisition optimiser", acq_opt_method, ACQ_OPT_METHODS)
        for part in hp_tune_criterion.split("-"):
            check_choice("dragonfly hp_tune_criterion", part, HP_TUNE_CRITERIA)
        if init_points is None:
            init_points = initial_design_size(self.full_trials)
        if init_points < 1 or refit_every < 1:
            raise UsageError(f"init_points ({init_points}) and refit_every ({refit_every}) must be >= 1")
        if not 0 <= repeat_tolerance < 0.5:
            raise UsageError(f"repeat_tolerance must be in [0, 0.5), got {repeat_tolerance}")
        if not 0 <= min_bandwidth <= 1:
            raise UsageError(f"min_bandwidth must be in [0, 1], got {min_bandwidth}")
        self.init_points, self.refit_every, self.repeat_tolerance = init_points, refit_every, repeat_tolerance
        self._df = import_dragonfly()
        self._global_rng = GlobalRandomState(seed)   # dragonfly draws from numpy's global RNG only
        options = Namespace(init_capital=init_points, acq=acq, acq_opt_method=acq_opt_method,
                            acq_opt_max_evals=acq_opt_max_evals, gpb_hp_tune_criterion=hp_tune_criterion,
                            hp_tune_max_evals=hp_tune_max_evals,
                            # dragonfly's default, 'direct', needs the Fortran library the sdist build
                            # lacks and falls back to PDOO with a warning on every fit; asking for PDOO
                            # also keeps proposals the same on machines that do have Fortran.
                            gpb_ml_hp_tune_opt="pdoo")
        with self._global_rng:
            self._opt = _floored_bandit(self._df.EuclideanGPBandit)(
                self._function_caller(), is_mf=self.multi_fidelity, options=options, ask_tell_mode=True)
            self._opt.min_bandwidth = min_bandwidth
            self._opt.initialise()
        # Ask/tell initialisation queues init_capital + 1 points (exd_core: `if points > init_capital`);
        # the extra one comes from a second latin hypercube. Keep the first, complete one.
        del self._opt.first_qinfos[init_points:]
        self._pending: dict[int, tuple[np.ndarray, int]] = {}   # trial_id -> (unit point, fidelity)
        self._evaluated: list[tuple[np.ndarray, int]] = []      # every told (unit point, fidelity)
        self._n_results = 0
        self._fitted_at: int | None = None   # number of results at the last GP hyperparameter fit

    # The four places where multi-fidelity BO differs (mfbo.py overrides them) -----------------
    def _function_caller(self):
        return self._df.EuclideanFunctionCaller(None, self._unit_box())

    def _from_answer(self, answer) -> tuple[np.ndarray, int]:
        return np.asarray(answer, dtype=float), self.space.max_fidelity

    def _datum(self, u: np.ndarray, obs: Observation) -> tuple:
        return u, obs.value

    def _set_in_progress(self, pending: list[tuple[np.ndarray, int]]) -> None:
        self._opt.eval_points_in_progress = [u for u, _ in pending]

    # ------------------------------------------------------------------------------------------
    def _unit_box(self) -> list[list[float]]:
        return [[0.0, 1.0]] * len(self.space.params)

    def _ask(self):
        opt = self._opt
        if self._n_results >= self.init_points:
            opt.first_qinfos.clear()   # resumed with enough results: the rest of the initial design is moot
        with self._global_rng:
            if not opt.first_qinfos and self._n_results == 0:
                # Every initial point is out and none has come back (several asks before any tell):
                # no data to fit a GP to yet, so draw one more initial point the way dragonfly does.
                opt.first_qinfos.extend(opt._get_initial_qinfos(1))
            initial = bool(opt.first_qinfos)
            if self._fitted_at is not None and self._n_results - self._fitted_at >= self.refit_every:
                # Dragonfly's own loop refits every build_new_model_every steps; in ask/tell mode nothing
                # does, and hyperparameters fitted on the initial points alone stall the search.
                opt._build_new_model()
                self._fitted_at = self._n_results
            # Dragonfly's ask/tell mode forgets points between ask and tell; showing it the pending
            # ones lets its 'halluc' strategy avoid proposing them again (several asks before tells).
            self._set_in_progress(list(self._pending.values()))
            try:
                answer = opt.ask()
            finally:
                self._set_in_progress([])
            if not initial and self._fitted_at is None:
                self._fitted_at = self._n_results   # that ask built the first GP
            u, fidelity = self._from_answer(answer)
            repeat = self._is_repeat(u, fidelity)
            if repeat:
                u = self._space_filling(fidelity)
        self._pending[self.next_trial_id] = (u, fidelity)
        params = {p.name: p.from_unit(float(x)) for p, x in zip(self.space.params, u)}
        return params, fidelity, {"initial_design": initial, "replaced_repeat": repeat}

    def _seen(self, fidelity: int) -> list[np.ndarray]:
        return [u for u, f in [*self._evaluated, *self._pending.values()] if f == fidelity]

    def _is_repeat(self, u: np.ndarray, fidelity: int) -> bool:
        """Every trial searches with the study's seed (common random numbers), so a lambda evaluated
        again at the same fidelity returns the same reward: the trial would teach nothing. Dragonfly
        proposes such repeats where its GP has next to no data (UCB on a GP of one result peaks on
        that result) and, without floor_bandwidths, around every point it has."""
        return any(np.max(np.abs(u - x)) < self.repeat_tolerance for x in self._seen(fidelity))

    def _space_filling(self, fidelity: int) -> np.ndarray:
        """Instead of a repeat: the point farthest from every one evaluated or pending at this fidelity
        (best of 256 uniform candidates, from the solver's own stream), which is what an acquisition
        does where the model knows nothing."""
        candidates = np.random.random((256, len(self.space.params)))
        seen = np.array(self._seen(fidelity))
        gaps = np.abs(candidates[:, None, :] - seen[None, :, :]).max(axis=2).min(axis=1)
        return candidates[int(np.argmax(gaps))]

    def _tell(self, obs: Observation) -> None:
        self._pending.pop(obs.trial_id, None)    # absent for results this solver never asked (resume)
        u = np.clip([p.to_unit(obs.params[p.name]) for p in self.space.params], 0.0, 1.0)
        self._evaluated.append((u, obs.fidelity))
        with self._global_rng:
            self._opt.tell([self._datum(u, obs)])   # a failed trial counts as WORST_REWARD (obs.value)
        self._n_results += 1


def initial_design_size(trials: int) -> int:
    """Random (latin hypercube) points before the GP: a quarter of the full-fidelity trials the budget
    buys, at least two. Two points are the fewest a GP can fit a length scale to; a quarter leaves
    three quarters of the study to the acquisition (dragonfly's fixed 5 would leave 3 of the default
    study's 8 trials to the model, and none of a 5-trial one)."""
    return max(2, trials // 4)


@functools.cache
def _floored_bandit(bandit_cls):
    """dragonfly's GP bandit with floor_bandwidths applied to every GP it fits (a subclass made once,
    on first use: dragonfly is imported lazily)."""
    class FlooredBandit(bandit_cls):
        min_bandwidth = 0.0

        def _get_gp_fitter(self, reg_data, use_additive=False):
            fitter = super()._get_gp_fitter(reg_data, use_additive)
            floor_bandwidths(fitter, self.min_bandwidth)
            return fitter

    return FlooredBandit


def floor_bandwidths(fitter, floor: float) -> None:
    """Raise the lower bound of a dragonfly GP fitter's length scales (log bandwidths, in the unit
    cube; fidelity ones too for MF-BO) to `floor`, before the marginal-likelihood fit.

    Dragonfly bounds them below by 0.01 times the norm of the data (~0.007 for two points). With two
    to five results the likelihood is flat enough that the fit sits on that bound: each result is
    explained on its own, the posterior falls back to the prior mean a hair away from it, and the
    acquisition creeps around the points it has (measured: most proposals of the 8-trial study within
    0.01 of an earlier one). A floor of 0.1 keeps the rewards of lambda and 2 lambda (0.1 of its three
    decades) correlated, which a smooth Eq. 19 landscape warrants, and still fits a peak 0.15 wide.
    Applies to the marginal-likelihood fit (hp_tune_criterion 'ml', the default); 'post_sampling'
    draws from priors dragonfly sets up from its own bounds."""
    if floor <= 0:
        return
    names = [name for name, kind in fitter.param_order if kind == "cts"]   # cts_hp_bounds' rows
    bounds = np.array(fitter.cts_hp_bounds, dtype=float)
    if len(names) != len(bounds):   # dragonfly 0.1.7's layout; another would need another reading
        raise RuntimeError(f"dragonfly GP fitter: {len(names)} continuous hyperparameters, {len(bounds)} bounds")
    for i, name in enumerate(names):
        if name.endswith("dim_bandwidths"):
            low = max(bounds[i, 0], math.log(floor))
            bounds[i] = [low, max(bounds[i, 1], low)]
    fitter.cts_hp_bounds = bounds
