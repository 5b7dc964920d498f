"""Attention with a layer's heads concatenated into one head (PruMerge reads CLIP's q/k this way)."""

from __future__ import annotations

import torch


def concat_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, H, L, d) per-head projections -> (B, L, H * d), the projection's output before the head split."""
    batch, heads, length, dim = x.shape
    return x.transpose(1, 2).reshape(batch, length, heads * dim)


def single_head_cls_attention(query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """Attention of token 0 (CLS) over all tokens, with every head concatenated into one (C = H * d channels).

    query, key: (B, H, L, d) as a bidirectional attention layer splits them. Returns (B, L) float32
    softmax(q_0 k^T / sqrt(C)), i.e. softmax(q_proj(x)_0 k_proj(x)^T * C^-0.5) on the full-width projections.
    """
    q_cls = concat_heads(query[:, :, :1]).float()  # (B, 1, C)
    keys = concat_heads(key).float()  # (B, L, C)
    logits = (q_cls @ keys.transpose(1, 2))[:, 0] * keys.shape[-1] ** -0.5  # (B, L)
    return logits.softmax(dim=-1)


def single_head_received_attention(query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """Attention each token receives, mean over all queries, with every head concatenated into one (C = H * d).

    The counterpart of :func:`single_head_cls_attention` for towers without a CLS token. query, key: (B, H, L, d)
    -> (B, L) float32 column means of softmax(Q K^T / sqrt(C)).
    """
    queries = concat_heads(query).float()  # (B, L, C)
    keys = concat_heads(key).float()  # (B, L, C)
    logits = queries @ keys.transpose(1, 2) * keys.shape[-1] ** -0.5  # (B, L, L)
    return logits.softmax(dim=-1).mean(dim=1)
