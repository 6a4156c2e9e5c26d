"""The outer loop's solvers (Sec. VII-B: random search, BO, multi-fidelity BO, plus composite BO of
Eq. 19's parts, BOHB and Optuna's TPE), one per module behind the ask/tell Solver of base.py.

Solver modules are imported on first use: dragonfly's import takes seconds and hpbandster pulls in
Pyro4 and statsmodels, which a study using random search should not pay for.
"""
from __future__ import annotations

import importlib
import inspect
import typing

from searchers.errors import UsageError, check_choice

from .base import WORST_REWARD, Observation, Proposal, Solver

# name -> "module:class", relative to this package
SOLVERS = {
    "random": "random:RandomSearch",
    "bo": "bo:BayesOpt",
    "cbo": "cbo:CompositeBO",
    "mfbo": "mfbo:MultiFidelityBO",
    "bohb": "bohb:BOHB",
    "tpe": "tpe:TPE",
}

__all__ = ["SOLVERS", "WORST_REWARD", "Observation", "Proposal", "Solver",
           "check_solver_options", "get_solver", "list_solvers", "make_solver", "solver_options"]


def list_solvers() -> list[str]:
    return list(SOLVERS)


def get_solver(name: str) -> type[Solver]:
    check_choice("solver", name, SOLVERS)
    module, cls = SOLVERS[name].split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


def solver_options(name: str) -> dict[str, object]:
    """The options a solver takes beyond space, budget_epochs and seed (its keyword-only parameters),
    with their defaults."""
    params = inspect.signature(get_solver(name).__init__).parameters
    return {k: p.default for k, p in params.items()
            if p.kind is p.KEYWORD_ONLY and k not in ("budget_epochs", "seed")}


def check_solver_options(name: str, options: dict) -> None:
    """Refuse, without building the solver, an option `name` does not take or a value of the wrong
    type (by the option's annotation); the solver checks ranges when it is built."""
    valid = solver_options(name)
    for key in options:
        check_choice(f"option of solver {name!r}", key, valid)
    hints = typing.get_type_hints(get_solver(name).__init__)
    for key, value in options.items():
        kinds = typing.get_args(hints[key]) or (hints[key],)   # int | None -> (int, NoneType)
        if not any(_is_a(value, k) for k in kinds):
            names = " or ".join("None" if k is type(None) else k.__name__ for k in kinds)
            raise UsageError(f"option {key} of solver {name!r} must be {names}, got {value!r}")


def _is_a(value, kind) -> bool:
    if kind is float:   # JSON writes 3.0 as 3
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:     # a bool is an int to Python, not to a user
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def make_solver(name: str, space, *, budget_epochs: int, seed: int, **options) -> Solver:
    check_solver_options(name, options)
    return get_solver(name)(space, budget_epochs=budget_epochs, seed=seed, **options)
