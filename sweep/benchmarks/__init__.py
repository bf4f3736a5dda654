"""Benchmark commands (``python -m sweep.benchmarks.<name>``); they read real data sets by path."""
