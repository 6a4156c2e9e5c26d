"""The outer loop's solvers (Sec. VII-B: random search, BO, multi-fidelity BO, plus BOHB and Optuna's
TPE), one per module behind the ask/tell Solver of base.py.

Solver modules are imported on first use: dragonfly's import takes seconds and hpbandster pulls in
Pyro4 and statsmodels, which a study using random search should not pay for.
"""
from __future__ import annotations

import importlib
import inspect

from searchers.errors import check_choice

from .base import WORST_REWARD, Observation, Proposal, Solver

# name -> "module:class", relative to this package
SOLVERS = {
    "random": "random:RandomSearch",
    "bo": "bo:BayesOpt",
    "mfbo": "mfbo:MultiFidelityBO",
    "bohb": "bohb:BOHB",
    "tpe": "tpe:TPE",
}

__all__ = ["SOLVERS", "WORST_REWARD", "Observation", "Proposal", "Solver",
           "get_solver", "list_solvers", "make_solver", "solver_options"]


def list_solvers() -> list[str]:
    return list(SOLVERS)


def get_solver(name: str) -> type[Solver]:
    check_choice("solver", name, SOLVERS)
    module, cls = SOLVERS[name].split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


def solver_options(name: str) -> dict[str, object]:
    """The options a solver takes beyond space, budget_epochs and seed, with their defaults."""
    params = inspect.signature(get_solver(name).__init__).parameters
    return {k: p.default for k, p in params.items() if k not in ("self", "space", "budget_epochs", "seed")}


def make_solver(name: str, space, *, budget_epochs: int, seed: int, **options) -> Solver:
    valid = solver_options(name)
    for key in options:
        check_choice(f"option of solver {name!r}", key, valid)
    return get_solver(name)(space, budget_epochs=budget_epochs, seed=seed, **options)
