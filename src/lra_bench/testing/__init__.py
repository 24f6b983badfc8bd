"""Conformance kit: the checks every attention of this package passes, for any attention.

    from lra_bench.testing import check_attention
    check_attention("cosine", invalid=[("temperature", 0.0)], temperature=5.0)
    check_attention(MyAttention)                          # an unregistered class with a Config

``check_attention`` runs every check of ``CHECKS`` (or those named in ``checks=``) and raises
``ConformanceError`` naming the attention and the check on the first failure. As a pytest
parametrisation, one test per (attention, check)::

    @pytest.mark.parametrize("check", CHECKS)
    def test_conforms(check):
        check_attention("cosine", checks=[check])

``pytest --pyargs lra_bench.testing`` runs every check on every registered attention,
installed plugins included, with default settings (``-k cosine`` picks one).
"""

from lra_bench.errors import ConformanceError
from lra_bench.testing.checks import CHECKS, TASK_LENGTHS, Subject, check_attention

__all__ = ["CHECKS", "TASK_LENGTHS", "ConformanceError", "Subject", "check_attention"]
