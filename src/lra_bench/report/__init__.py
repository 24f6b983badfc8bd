"""Leaderboard reports: load result CSVs, aggregate seeds, render tables, compare and plot."""

from __future__ import annotations


class ReportError(Exception):
    """A report cannot be produced as asked; ``str(err)`` is one line for the user."""
