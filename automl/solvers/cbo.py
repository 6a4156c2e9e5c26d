"""Composite Bayesian optimization of Eq. 19: dragonfly GPs on the reward's two parts, the reward
applied to their samples (Astudillo & Frazier, "Bayesian optimization of composite functions", 2019).

Why not a GP on the reward itself (bo.py): Eq. 19, reward = acc * (R / RT) ** w with w = -1 over the
target, has a kink at R = RT, and the best network sits on it. Its two parts are smooth: the cost R
falls steadily as lambda grows, and accuracy moves with the capacity that R measures. Measured on
CIFAR-10 (results/README.md): R fell from 94.6 to 39.9 ms between lambda = 0.011 and 0.037, while a
GP on the reward saw 0.400 at 0.011 (over the target, divided by R / RT) and 0.457 at 0.037, put its
maximum near 0.04 and delivered 41.5 ms for an 80 ms target. Modelled apart, the parts place the
target: the cost GP says where R crosses RT and how sure it is, and the accuracy model says what a
network of that R scores.

The two models, both dragonfly GPs (Matern 2.5, hyperparameters by marginal likelihood, as bo.py's):
- cost: ln R over the hyperparameters (unit cube, log ranges in log scale);
- accuracy: validation accuracy over ln(R / RT), one dimension whatever the space: a network's
  accuracy follows its capacity, which R measures (our modelling assumption; the trials' scatter
  around it is the GP's noise).
The acquisition is expected improvement over the best reward seen, by Monte Carlo: for each candidate,
draw ln R from the cost GP, then accuracy at that R from the accuracy GP, and score the pair with
Eq. 19 (reward.rewards). Trials in flight enter the cost GP as hallucinated observations at its own
mean (kriging believer): the next proposal goes elsewhere.
"""
from __future__ import annotations

import math

import numpy as np

from searchers.errors import UsageError

from ..reward import rewards
from ..spaces import Space
from .base import Observation, Solver
from .bo import floor_bandwidths, initial_design_size
from .compat import GlobalRandomState, import_dragonfly


COST_NOISE = 1e-4   # variance of ln R: 1 % of the cost, a step of one layer's choice at ~100 ms


class CompositeBO(Solver):
    name = "cbo"

    def __init__(self, space: Space, *, budget_epochs: int, seed: int = 0,
                 init_points: int | None = None,   # None: sized to the budget, as bo.py's
                 candidates: int = 512,            # random points the acquisition is maximised over
                                                   # (the cost GP's covariance over them is formed)
                 samples: int = 256,               # Monte Carlo draws per candidate: EI's error
                                                   # ~ 1/16 of the reward's spread there
                 min_bandwidth: float = 0.1,       # length-scale floor of the cost GP (unit scale),
                                                   # bo.py's floor_bandwidths and its measurement
                 repeat_tolerance: float = 1e-3,   # as bo.py's: a lambda within 0.7 % of one
                                                   # evaluated or pending is not proposed again
                 accuracy_noise: float = 0.005):   # least standard deviation of a trial's accuracy
                                                   # around the trend: 0.007 is the binomial SE of
                                                   # 47 % on 5,000 CIFAR-10 validation images
        super().__init__(space, budget_epochs=budget_epochs, seed=seed)
        if init_points is None:
            init_points = initial_design_size(self.full_trials)
        if init_points < 1 or candidates < 2 or samples < 2:
            raise UsageError(f"init_points ({init_points}) must be >= 1, candidates ({candidates}) and "
                             f"samples ({samples}) >= 2")
        if not 0 <= repeat_tolerance < 0.5 or not 0 <= min_bandwidth <= 1 or not accuracy_noise > 0:
            raise UsageError(f"repeat_tolerance must be in [0, 0.5), min_bandwidth in [0, 1] and "
                             f"accuracy_noise > 0, got {repeat_tolerance}, {min_bandwidth} and {accuracy_noise}")
        self.init_points, self.candidates, self.samples = init_points, candidates, samples
        self.min_bandwidth, self.repeat_tolerance = min_bandwidth, repeat_tolerance
        self.accuracy_noise = accuracy_noise
        self._df = import_dragonfly()
        dim = len(space.params)
        # Latin hypercube: one point per stratum of each dimension, strata shuffled per dimension
        rng = np.random.default_rng(seed)
        strata = np.stack([rng.permutation(init_points) for _ in range(dim)], axis=1)
        self._initial = list((strata + rng.random((init_points, dim))) / init_points)
        self._pending: dict[int, np.ndarray] = {}
        self._points: list[np.ndarray] = []        # every told point (unit cube), failures included
        self._parts: list[tuple[np.ndarray, float, float]] = []   # (point, accuracy, R) of successes
        self._target: float | None = None

    def _unit(self, params: dict[str, float]) -> np.ndarray:
        return np.clip([p.to_unit(params[p.name]) for p in self.space.params], 0.0, 1.0)

    def _ask(self):
        # Randomness per trial id, not one stream: a resumed study, told the same results, asks what
        # the uninterrupted one asked.
        rng = np.random.default_rng([self.seed, self.next_trial_id])
        if len(self._parts) < 2:
            # Initial design first; if every initial point is out and fewer than two results have come
            # back (asks ahead of tells), one more uniform point: two are the fewest a GP fits.
            u = self._initial.pop(0) if self._initial else rng.random(len(self.space.params))
            initial = True
        else:
            u, initial = self._acquire(rng), False
        self._pending[self.next_trial_id] = u
        return ({p.name: p.from_unit(float(x)) for p, x in zip(self.space.params, u)},
                self.space.max_fidelity, {"initial_design": initial})

    def _tell(self, obs: Observation) -> None:
        self._pending.pop(obs.trial_id, None)    # absent for results this solver never asked (resume)
        u = self._unit(obs.params)
        self._points.append(u)
        if obs.reward is None or obs.fidelity < self.space.max_fidelity:
            return   # a failure has no parts; a shorter search has other ones (this solver runs full trials)
        if obs.accuracy is None or obs.cost is None or obs.target is None:
            raise ValueError(f"{self.name} models Eq. 19's parts: an observation without accuracy, cost "
                             f"and target cannot be told to it ({obs})")
        self._target = obs.target
        self._parts.append((u, obs.accuracy, obs.cost))
        if len(self._parts) >= 2:
            self._initial.clear()   # the models take over; the rest of the initial design is moot

    # The model ------------------------------------------------------------------------------------
    def _fit_cost(self, X: list, log_r: np.ndarray):
        """dragonfly's GP on ln R. A trial's R is its network's exact cost, and the same lambda
        searched with the study's seed gives the same network: no noise to learn, only the staircase
        of discrete choices (COST_NOISE, fixed). A tuned noise term, on 2-4 points, explains the data
        away as noise (measured: 0.058, a factor 1.27 on R)."""
        options = self._df.gp_options()
        # marginal likelihood, maximised by PDOO: bo.py's choices (no Fortran DIRECT in the sdist build)
        options.hp_tune_criterion, options.ml_hp_tune_opt = "ml", "pdoo"
        options.noise_var_type, options.noise_var_value = "value", COST_NOISE
        fitter = self._df.EuclideanGPFitter([list(x) for x in X], list(log_r), options=options)
        floor_bandwidths(fitter, self.min_bandwidth)
        return fitter.fit_gp()[1]

    def _acquire(self, rng: np.random.Generator) -> np.ndarray:
        """The candidate of largest expected improvement of Eq. 19 under the two models."""
        X = [u for u, _, _ in self._parts]
        acc = np.array([a for _, a, _ in self._parts])
        log_r = np.log([r for _, _, r in self._parts])
        target = self._target
        with GlobalRandomState([self.seed, self.next_trial_id]):   # dragonfly's fits use numpy's global RNG
            cost_gp = self._fit_cost(X, log_r)
        cand = rng.random((self.candidates, len(self.space.params)))
        pending = list(self._pending.values())
        if pending:
            mean, std = cost_gp.eval_with_hallucinated_observations(cand, pending, uncert_form="std")
        else:
            mean, std = cost_gp.eval(cand, uncert_form="std")
        draws = rng.standard_normal((2, self.samples, self.candidates))
        log_r_draws = mean + std * draws[0]
        acc_mean, acc_std = accuracy_model(log_r - math.log(target), acc, self.accuracy_noise)
        x = log_r_draws - math.log(target)
        acc_draws = acc_mean(x) + acc_std(x) * draws[1]
        scores = rewards(acc_draws, np.exp(log_r_draws), target)           # Eq. 19 on each draw
        best = float(rewards(acc, np.exp(log_r), target).max())
        ei = np.maximum(scores - best, 0.0).mean(axis=0)
        # ties (EI 0 everywhere: the models see nothing better) go to the best expected reward
        order = np.lexsort((-scores.mean(axis=0), -ei))
        for i in order:
            if not self._is_repeat(cand[i]):
                return cand[i]
        return cand[order[0]]

    def _is_repeat(self, u: np.ndarray) -> bool:
        """Every trial searches with the study's seed, so a lambda run again returns the same result."""
        seen = [*self._points, *self._pending.values()]
        return any(np.max(np.abs(u - x)) < self.repeat_tolerance for x in seen)


def accuracy_model(x: np.ndarray, acc: np.ndarray, noise_floor: float):
    """Accuracy as a straight line in x = ln(R / RT), by Bayesian linear regression: the predictive
    mean and standard deviation as functions of x.

    A line, because what the solver must know of accuracy is its trend with capacity: rising, Eq. 19
    peaks at the target; flat, every network under the target ties. A GP on accuracy alone reverts to
    its mean between a few noisy points (measured: with a 31 ms and a 116 ms trial it predicted
    0.45 +- 0.026 at every R), which makes the smallest networks, never penalised, look best.
    Noise: the residual variance (n - 2 degrees of freedom), at least noise_floor ** 2; a weak
    prior on the slope (standard deviation 1 accuracy per unit of ln R) keeps one point or one R
    well posed."""
    design = np.stack([np.ones_like(x), x], axis=1)
    prior = np.diag([1e-6, 1.0])                               # precisions of intercept and slope
    coef = np.linalg.solve(design.T @ design + prior * noise_floor ** 2, design.T @ acc)
    dof = len(acc) - 2
    resid = acc - design @ coef
    noise_var = max(float(resid @ resid) / dof if dof > 0 else 0.0, noise_floor ** 2)
    cov = np.linalg.inv(design.T @ design / noise_var + prior)

    def mean(z):
        return coef[0] + coef[1] * z

    def std(z):
        # predictive: the line's uncertainty plus a new trial's own scatter
        return np.sqrt(noise_var + cov[0, 0] + 2 * cov[0, 1] * z + cov[1, 1] * z ** 2)

    return mean, std
