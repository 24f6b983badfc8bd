"""A paper's table as one grid of runs: expanded from an experiment preset, planned, followed
and reported."""
