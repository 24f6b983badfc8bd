"""``python -m lra_bench.bench``: the same command as ``python -m lra_bench.benchmarking``."""

from lra_bench.benchmarking.__main__ import main

if __name__ == "__main__":
    main()
