"""A stand-in for the bench's measuring function that breaks its process like a sticky CUDA error.

Module level, so that a spawned bench worker can import it.
"""

from __future__ import annotations

import os
from typing import Any

STICKY = (
    "CUDA error: device-side assert triggered\nCUDA kernel errors might be asynchronously reported"
)
_broken = (
    False  # once set, every later case in this process fails, as after a real device-side assert
)


def breaking_run(case: Any) -> dict[str, Any]:
    global _broken
    if _broken or case.label == "assert":
        _broken = True
        raise RuntimeError(STICKY)
    return {"pid": os.getpid()}
