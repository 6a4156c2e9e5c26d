"""The inner loop: NAS methods behind one Searcher interface (see base.py). Imports neither Ray nor automl.

    from searchers import get_searcher, list_searchers, load_task, RunSettings
    cls = get_searcher("single-path")
    result = cls(cls.make_params(lam=0.02), load_task("digits"), RunSettings(epochs=8)).run()
"""
from __future__ import annotations

import importlib

from .base import RunSettings, Searcher
from .data import Task, check_data, load_task
from .errors import DivergedError, UsageError, check_choice
from .result import EpochMetrics, SearchResult, load_model

# name -> "module:Class"; imported on first use so a light command (info) stays light.
_REGISTRY = {
    "single-path": "searchers.single_path:SinglePathNAS",
    "random": "searchers.random_search:RandomSearch",
    "multi-path": "searchers.multi_path:MultiPathNAS",
    "dsnas": "searchers.dsnas:DSNAS",
    "gold": "searchers.gold:GoldNAS",
    "entran": "searchers.entran:EnTranNAS",
}


def list_searchers() -> list[str]:
    """Names of the searchers whose module is present."""
    return [n for n, target in _REGISTRY.items() if importlib.util.find_spec(target.split(":")[0]) is not None]


def get_searcher(name: str) -> type[Searcher]:
    check_choice("searcher", name, list_searchers())
    module, cls = _REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)


__all__ = ["RunSettings", "Searcher", "Task", "check_data", "load_task", "UsageError", "DivergedError", "check_choice",
           "EpochMetrics", "SearchResult", "load_model", "get_searcher", "list_searchers"]
