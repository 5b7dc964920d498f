"""Shared scoring of the VQA-accuracy benchmarks (VQAv2, TextVQA)."""

from __future__ import annotations

from typing import Any

__all__ = ["mean_percent"]


def mean_percent(rows: list[dict[str, Any]], key: str = "accuracy") -> float:
    """``100 * mean(row[key])``; 0.0 for no rows."""
    return 100 * sum(row[key] for row in rows) / len(rows) if rows else 0.0
