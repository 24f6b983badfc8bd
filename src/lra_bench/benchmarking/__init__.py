"""The bench (``python -m lra_bench.bench``, or ``python -m lra_bench.benchmarking``): variant
entries, measurement, worker processes, tables."""
