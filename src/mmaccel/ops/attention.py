"""Attention probabilities of selected query rows, computed from a layer's own post-RoPE queries and keys.

This replaces ``output_attentions=True`` (which forces eager attention and materialises every layer's L x L
map): a method asks for the rows it needs, and the kernel that runs the layer stays SDPA or FlashAttention.
"""

from __future__ import annotations

import torch


def attention_rows(
    query: torch.Tensor,
    key: torch.Tensor,
    rows: torch.Tensor,
    scaling: float,
    mask: torch.Tensor | None = None,
    causal: bool = True,
) -> torch.Tensor:
    """Softmax attention of chosen query rows over all keys, per head, in float32.

    query: (B, H, Lq, d); key: (B, H_kv, Lk, d) with H a multiple of H_kv (grouped-query attention);
    rows: (B, R) long, query positions (0 <= row < Lq); mask: None, a bool mask (True = attend) or an additive
    float mask, broadcastable to (B, 1 | H, Lq, Lk), exactly as the model's attention function receives it.
    When ``mask`` is None and ``causal`` is True, query row r (at absolute position Lk - Lq + r) sees keys up to
    that position, as the kernels' ``is_causal`` does (lower-right aligned).
    Returns (B, H, R, Lk) float32 probabilities.
    """
    batch, n_heads, q_len, head_dim = query.shape
    n_kv = key.shape[1]
    rows_q = query.gather(2, rows[:, None, :, None].expand(batch, n_heads, -1, head_dim))  # (B, H, R, d)
    keys = key.repeat_interleave(n_heads // n_kv, dim=1) if n_kv != n_heads else key  # (B, H, Lk, d)
    logits = torch.matmul(rows_q.float(), keys.float().transpose(-1, -2)) * scaling  # (B, H, R, Lk)
    k_len = keys.shape[2]
    if mask is not None:
        # (B|1, 1|H, Lq, Lk) -> the chosen rows (B, 1|H, R, Lk)
        mask = mask.expand(batch, -1, -1, -1)
        picked = mask.gather(2, rows[:, None, :, None].expand(batch, mask.shape[1], -1, mask.shape[-1]))
        picked = picked[..., :k_len]
        if picked.dtype == torch.bool:
            logits = logits.masked_fill(~picked, float("-inf"))
        else:
            logits = logits + picked.float()
    elif causal and q_len > 1:
        absolute = rows + (k_len - q_len)  # (B, R)
        visible = torch.arange(k_len, device=query.device)[None, None, :] <= absolute[:, :, None]  # (B, R, Lk)
        logits = logits.masked_fill(~visible[:, None], float("-inf"))
    return torch.softmax(logits, dim=-1)


def cls_attention(query: torch.Tensor, key: torch.Tensor, scaling: float) -> torch.Tensor:
    """Attention of the first token (CLS) over all tokens in a bidirectional encoder layer.

    query, key: (B, H, L, d) -> (B, H, L) float32 probabilities of row 0.
    """
    rows = torch.zeros(query.shape[0], 1, dtype=torch.long, device=query.device)
    return attention_rows(query, key, rows, scaling, mask=None, causal=False)[:, :, 0]


def received_attention(query: torch.Tensor, key: torch.Tensor, scaling: float, block: int = 1024) -> torch.Tensor:
    """Attention each token receives in a bidirectional layer: softmax(Q K^T * scaling) averaged over the queries.

    query, key: (B, H, L, d) (same number of heads). Returns (B, H, L) float32; each (b, h) row sums to 1 (a
    distribution over the tokens, like a CLS row). Queries are processed ``block`` rows at a time, so memory is
    O(block x L) per head instead of L x L.
    """
    total = query.new_zeros(query.shape[:3], dtype=torch.float32)  # (B, H, L)
    keys_t = key.float().transpose(-1, -2)  # (B, H, d, L)
    n_queries = query.shape[2]
    for start in range(0, n_queries, block):
        logits = torch.matmul(query[:, :, start : start + block].float(), keys_t) * scaling  # (B, H, b, L)
        total += torch.softmax(logits, dim=-1).sum(dim=2)
    return total / n_queries
