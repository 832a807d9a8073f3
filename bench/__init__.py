"""Benchmarks of Groundswell's hot paths against baselines measured in the same run (docs/benchmarks.md).

Run them with `make bench` (bench/run.py); they are not part of the test suite.
"""
