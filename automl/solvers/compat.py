"""Compatibility shims for the two unmaintained solver libraries, all in one place.

dragonfly-opt 0.1.7 (last release 2022) and hpbandster 0.7.4 ("Not Maintained Anymore") predate
numpy 2. Each shim below says which break it repairs; ../shared/notes/dependencies.md has the
measurements. dragonfly must be imported only through `import_dragonfly()` so that the aliases are
in place first, in every process (Ray workers included) that touches it.
"""
from __future__ import annotations

import contextlib
import math
import random
import warnings
from types import SimpleNamespace

import numpy as np

# Names numpy 2 removed (NEP 52) that dragonfly 0.1.7 still uses, with what they used to mean:
# np.math.factorial / np.math.gamma in gp/kernel.py (Matern kernel), np.asscalar in gp/kernel.py
# and gp/euclidean_gp.py, np.int / np.float / np.object / np.NaN across the package.
# np.bool matters on numpy 1.24-1.26 only: numpy 2 has a real np.bool again (the numpy scalar
# type), which must not be overwritten.
_NUMPY_ALIASES = {
    "math": math,
    "asscalar": lambda a: a.item(),
    "int": int,
    "float": float,
    "bool": bool,
    "object": object,
    "NaN": np.nan,
}


def restore_numpy_aliases() -> list[str]:
    """Set each removed numpy name that is missing; idempotent. Returns the names it set now."""
    restored = []
    for name, value in _NUMPY_ALIASES.items():
        # `name in np.__dict__` rather than hasattr: numpy 2's module __getattr__ answers some
        # removed names (np.object, np.float) with an error or a FutureWarning instead of a value.
        if name not in np.__dict__:
            setattr(np, name, value)
            restored.append(name)
    return restored


def import_dragonfly() -> SimpleNamespace:
    """Import dragonfly's ask/tell pieces after restoring the numpy aliases they need.

    Returns a namespace with: EuclideanGPBandit (the optimiser, gp_bandit.py), EuclideanDomain
    (the box to search), EuclideanFunctionCaller (single fidelity) and EuclideanMultiFunctionCaller
    (multi-fidelity: raw_fidel_space, fidel_cost_func, raw_fidel_to_opt); EuclideanGPFitter and
    gp_options() (a GP on its own, as cbo.py uses it: dragonfly's GP options with their defaults).
    """
    restore_numpy_aliases()
    with warnings.catch_warnings():
        # The sdist build has no Fortran DIRECT library and says so on import; dragonfly falls back
        # to its pure-Python PDOO optimiser, and the solvers default to random acquisition search.
        warnings.filterwarnings("ignore", message="(?s).*Fortran direct library", category=UserWarning)
        from dragonfly.utils import oper_utils  # noqa: F401  (the module that warns)
    from dragonfly.exd.domains import EuclideanDomain
    from dragonfly.exd.experiment_caller import EuclideanFunctionCaller, EuclideanMultiFunctionCaller
    from dragonfly.gp.euclidean_gp import EuclideanGPFitter, euclidean_gp_args
    from dragonfly.opt.gp_bandit import EuclideanGPBandit
    from dragonfly.utils.option_handler import load_options
    return SimpleNamespace(EuclideanGPBandit=EuclideanGPBandit, EuclideanDomain=EuclideanDomain,
                           EuclideanFunctionCaller=EuclideanFunctionCaller,
                           EuclideanMultiFunctionCaller=EuclideanMultiFunctionCaller,
                           EuclideanGPFitter=EuclideanGPFitter,
                           gp_options=lambda: load_options(euclidean_gp_args))


def _serialize_numpy_scalar(obj, serializer, out, level):
    # Write the Python value: serpent would otherwise write `np.float64(2.0)` (numpy 2's repr),
    # which the receiving side cannot parse, and it refuses numpy.str_ outright.
    serializer._serialize(obj.item(), out, level)


def patch_serpent() -> None:
    """Make serpent (Pyro4's default serializer, used by hpbandster's NameServer/Worker transport)
    send numpy scalars as plain Python values. Without it hpbandster's own BOHB hangs silently under
    numpy 2: configs sampled from ConfigSpace 1.x carry numpy floats and numpy.str_. Idempotent.
    Serializers built before this call keep their old registry copy, so call it before Pyro starts.
    """
    import serpent
    serpent.register_class(np.generic, _serialize_numpy_scalar)


@contextlib.contextmanager
def quiet_kde_rng_warning():
    """hpbandster 0.7.4 builds statsmodels KDEs without `rng=`, and statsmodels 0.15 warns on every fit
    that the default will become a freshly seeded Generator. A KDE draws random numbers only for its
    subsampled ('efficient') bandwidth estimate, which hpbandster does not ask for (it uses
    'normal_reference'), so the change cannot alter a result: the warning is silenced around
    hpbandster's new_result."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="After 0.17 or January 2028", category=FutureWarning)
        yield


class GlobalRandomState:
    """A private copy of numpy's and Python's global random states, swapped in by `with`.

    dragonfly (latin hypercube, acquisition choice, GP hyperparameter search) and hpbandster's KDE
    sampler (np.random, scipy's truncnorm.rvs) draw from numpy's global RNG and take no generator.
    A solver seeds one of these from its own seed and wraps every library call in it: its draws then
    continue one private stream (same seed, same calls => same proposals), unaffected by anything
    else in the process, and the caller's global state is restored on exit. Not reentrant.
    """

    def __init__(self, seed: int | list[int]):
        entropy = int(np.random.SeedSequence(seed).generate_state(1)[0])   # any seed >= 0 -> 32 bits
        self._np = np.random.RandomState(entropy).get_state()
        self._py = random.Random(entropy).getstate()
        self._outer = None

    def __enter__(self):
        self._outer = np.random.get_state(), random.getstate()
        np.random.set_state(self._np)
        random.setstate(self._py)
        return self

    def __exit__(self, *exc):
        self._np, self._py = np.random.get_state(), random.getstate()
        np.random.set_state(self._outer[0])
        random.setstate(self._outer[1])
        self._outer = None
