"""Keep the most attended tokens and fuse the rest into one token (EViT's inattentive-token fusion)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class KeepFuse:
    """Result of :func:`keep_and_fuse` on (I, N) tokens with a CLS token at 0."""

    hidden: torch.Tensor  # (I, N', D): [CLS, kept in descending attention, fused (if any)]
    sizes: torch.Tensor  # (I, N', 1): original tokens each output token stands for
    index: torch.Tensor  # (I, N) long: output token each input token went into, -1 when dropped
    source: torch.Tensor  # (I, N') long: input token each output token continues, -1 for the fused token


def keep_and_fuse(
    hidden: torch.Tensor, sizes: torch.Tensor, scores: torch.Tensor, n_keep: int, fuse: bool
) -> KeepFuse:
    """Keep the ``n_keep`` non-CLS tokens with the highest ``scores``; fuse or drop the others.

    hidden: (I, N, D) with CLS at index 0; sizes: (I, N, 1); scores: (I, N - 1) CLS attention over the non-CLS
    tokens (mean over heads). Kept tokens follow in descending score order (ties toward the lower index). With
    ``fuse``, the other tokens become one token ``sum_j scores_j * x_j`` (raw attention weights, not
    renormalised), appended last. N' = 1 + n_keep (+ 1 with ``fuse``).
    """
    n_images, n_tokens = hidden.shape[:2]
    device = hidden.device
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices  # (I, N - 1)
    keep, rest = order[:, :n_keep], order[:, n_keep:].sort(dim=-1).values  # (I, k), (I, N - 1 - k)
    others = hidden[:, 1:]  # (I, N - 1, D)
    other_sizes = sizes[:, 1:]

    def take(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return x.gather(1, idx[..., None].expand(-1, -1, x.shape[-1]))

    parts = [hidden[:, :1], take(others, keep)]
    size_parts = [sizes[:, :1], take(other_sizes, keep)]
    source = [torch.zeros(n_images, 1, dtype=torch.long, device=device), keep + 1]
    index = torch.full((n_images, n_tokens), -1, dtype=torch.long, device=device)
    index[:, 0] = 0
    index[:, 1:].scatter_(1, keep, torch.arange(1, n_keep + 1, device=device).expand(n_images, -1))
    if fuse:
        weights = scores.gather(1, rest).to(hidden.dtype)  # (I, N - 1 - k)
        parts.append((take(others, rest) * weights[..., None]).sum(dim=1, keepdim=True))  # (I, 1, D)
        size_parts.append(take(other_sizes, rest).sum(dim=1, keepdim=True))
        source.append(torch.full((n_images, 1), -1, dtype=torch.long, device=device))
        index[:, 1:].scatter_(1, rest, torch.full_like(rest, n_keep + 1))
    return KeepFuse(
        hidden=torch.cat(parts, dim=1),
        sizes=torch.cat(size_parts, dim=1),
        index=index,
        source=torch.cat(source, dim=1),
    )
