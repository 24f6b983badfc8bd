"""The table presets' sweeper (``lra_bench.table``): Hydra's basic sweeper, minus the second
composition of each complete run. Hydra loads sweepers only from the ``hydra_plugins`` package.

Before launching a batch, Hydra's basic sweeper composes every job's config once to catch a bad
one early, and the launcher then composes each again to run it. For a relaunched grid most jobs
are complete runs that only find their results and return, so composing them twice was most of
a skipped run's cost. This sweeper checks early only the jobs that will train (those whose
folder holds no complete ``results.json``); every job is still composed by the launcher, and a
complete run still checks its own folder (``run_state.open_folder``) before it is skipped.
"""

from __future__ import annotations

from collections.abc import Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper


class GridSweeper(BasicSweeper):
    """``hydra.sweeper._target_`` of the table presets (same settings as the basic sweeper)."""

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        from lra_bench.table.launch import job_complete  # not at import: Hydra imports every plugin

        assert self.config is not None
        pending = [job for job in batch if not job_complete(self.config, list(job))]
        super().validate_batch_is_legal(pending)
