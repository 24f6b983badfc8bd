"""``pytest --pyargs lra_bench.testing``: every check on every registered attention (plugins
included), default settings."""

from __future__ import annotations

import pytest

from lra_bench.attention import available
from lra_bench.testing import CHECKS, check_attention


@pytest.mark.parametrize("check", list(CHECKS))
@pytest.mark.parametrize("name", available())
def test_attention_conforms(name: str, check: str) -> None:
    check_attention(name, checks=[check])
