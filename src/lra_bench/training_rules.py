"""Rules of published training code that a protocol may switch on (all off by default).

- ``trainer.best_after`` (a fraction of ``trainer.steps``): ``best.pt`` is written only by an
  evaluation after that fraction of the steps. The best dev accuracy is still tracked from the
  first evaluation, so an early best that no later evaluation beats leaves no ``best.pt`` and the
  test runs on the last weights, as ``pkuzengqi/Skyformer``'s loop does with 0.2.
- ``data.test_drop_last``: the test set loses its last partial batch of ``trainer.batch_size``
  examples (in file order), as that code's test loader (``drop_last=True``) does.
- ``trainer.amp_dtype`` (``lra_bench.runtime.precision_of``): which autocast type
  ``trainer.amp=true`` uses; ``fp16`` trains in fp16 with a gradient scaler on a CUDA device and in
  fp32 elsewhere.
"""

from __future__ import annotations

from typing import Any

from lra_bench.errors import DataError

AMP_DTYPES = ("auto", "fp16", "bf16")

# left out of the run's config hash when off, so run folders made before these settings resume
UNHASHED_DEFAULTS = {
    ("trainer", "amp_dtype"): "auto",
    ("trainer", "best_after"): 0.0,
    ("data", "test_drop_last"): False,
}


def keeps_best(trainer_cfg: Any, step: int) -> bool:
    """Whether an evaluation after ``step`` updates
    may write ``best.pt`` (``trainer.best_after``)."""
    return step > trainer_cfg.best_after * trainer_cfg.steps


def drop_partial_batch(split: Any, batch_size: int, enabled: bool) -> Any:
    """``split`` without its last partial batch of
    ``batch_size`` (unchanged when not ``enabled``)."""
    kept = len(split) - len(split) % batch_size
    if not enabled or kept == len(split):
        return split
    if kept == 0:
        raise DataError(
            f"data.test_drop_last: the test set has {len(split)} examples, fewer than one batch of "
            f"trainer.batch_size={batch_size}, so nothing would be tested; set "
            "data.test_drop_last=false "
            "or a smaller trainer.batch_size"
        )
    return split.select(range(kept))


def check(cfg: Any, fail: Any) -> None:
    """The rules' settings in range; ``fail(key, value, how_to_fix)`` raises the one-line error."""
    if cfg.trainer.amp_dtype not in AMP_DTYPES:
        fail("trainer.amp_dtype", cfg.trainer.amp_dtype, f"choose {', '.join(AMP_DTYPES)}")
    if not 0 <= cfg.trainer.best_after < 1:
        fail(
            "trainer.best_after",
            cfg.trainer.best_after,
            "must be in [0, 1) (a fraction of trainer.steps)",
        )
