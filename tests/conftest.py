"""Shared fixtures: the digits task once per session, tiny copies of it, the optional shared data."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "studies"))
SHARED = ROOT.parent / "shared"

import torch  # noqa: E402

# one thread: several test processes (and Ray workers) share 2 cores; OpenMP spinning on an
# oversubscribed machine is 10x slower than one thread each
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits():
    from searchers import load_task

    return load_task("digits")


@pytest.fixture
def tiny(digits):
    from automl.testing.searchers import tiny_task

    return tiny_task(digits)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    d = SHARED / "data"
    if not d.is_dir():
        pytest.skip("../shared/data is not present")
    return d
