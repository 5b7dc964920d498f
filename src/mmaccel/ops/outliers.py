"""Interquartile-range outliers: how many scores stand out above the rest (PruMerge's adaptive keep ratio)."""

from __future__ import annotations

import torch


def iqr_outlier_count(scores: torch.Tensor, whisker: float = 1.5) -> torch.Tensor:
    """Number of scores above Q3 + whisker * (Q3 - Q1), per row.

    scores: (I, N); quartiles use linear interpolation between order statistics (numpy's default
    ``percentile``), computed in float32 per row. Returns (I,) long.
    """
    values = scores.float()
    q1 = torch.quantile(values, 0.25, dim=-1, keepdim=True)  # (I, 1)
    q3 = torch.quantile(values, 0.75, dim=-1, keepdim=True)
    upper = q3 + whisker * (q3 - q1)
    return (values > upper).sum(dim=-1)


def adaptive_keep_count(n_outliers: int, n_tokens: int) -> int:
    """Tokens PruMerge keeps for ``n_outliers`` outliers among ``n_tokens``: ``int(N * (n_outliers / N))``.

    The reference computes the ratio first and multiplies back, which for some N (not 576) loses one token to
    float rounding; this keeps that arithmetic so that counts match.
    """
    return int(n_tokens * (n_outliers / n_tokens))
