"""Contract suites that every registered member of a family passes (solvers.py: every solver;
searchers.py: every searcher), imported by the tests under tests/. Shipped with the package so that a
new member's author can run the same contract."""
