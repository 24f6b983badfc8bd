"""Pieces of ``python -m lra_bench.bench``: variant entries, measurement, worker processes, reports."""
