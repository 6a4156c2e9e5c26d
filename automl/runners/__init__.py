"""Runners execute a study's trials: Ray Tune (the product), in-process (tests, single machine
without Ray), replay (answers from recorded trials; solver comparisons in seconds)."""
