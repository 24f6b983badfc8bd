"""Leaderboard reports: load result CSVs, aggregate seeds, render tables, compare and plot."""

from __future__ import annotations

from lra_bench.errors import ReportError

__all__ = ["ReportError"]
