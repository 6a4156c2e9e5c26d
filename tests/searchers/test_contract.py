"""The shared searcher contract (automl/testing/searchers.py) over every registered searcher."""
import pytest

from automl.testing import searchers as contract
from searchers import list_searchers


@pytest.mark.parametrize("name", list_searchers())
@pytest.mark.parametrize("check", contract.CONTRACT, ids=lambda f: f.__name__)
def test_contract(name, check, tiny):
    check(name, tiny)


@pytest.mark.parametrize("name", list_searchers())
def test_child_and_saved_model(name, tiny, tmp_path):
    contract.child_reproduces_logits(name, tiny, tmp_path)
