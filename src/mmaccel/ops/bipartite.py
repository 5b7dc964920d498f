"""Bipartite soft matching (ToMe): merge the r most similar token pairs between two alternating halves."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class BipartiteMatching:
    """Which tokens of set A (even positions) merge into which tokens of set B (odd positions).

    For an input of N tokens, A = tokens 0, 2, 4, ... (``ceil(N / 2)``) and B = tokens 1, 3, 5, ...
    (``floor(N / 2)``). The output is ``[A tokens not merged, all B tokens]``: N - r tokens.
    """

    unmerged: torch.Tensor  # (I, |A| - r) long: indices into A kept as they are
    merged: torch.Tensor  # (I, r) long: indices into A merged away, most similar first
    destination: torch.Tensor  # (I, r) long: index into B each merged A token goes into

    @property
    def r(self) -> int:
        return self.merged.shape[1]

    def merge(self, x: torch.Tensor, reduce: str = "sum") -> torch.Tensor:
        """x: (I, N, C) -> (I, N - r, C); merged A tokens are reduced into their B token (``scatter_reduce``)."""
        channels = x.shape[-1]
        a, b = x[:, ::2], x[:, 1::2]  # (I, |A|, C), (I, |B|, C)
        kept = a.gather(1, self.unmerged[..., None].expand(-1, -1, channels))
        moved = a.gather(1, self.merged[..., None].expand(-1, -1, channels))
        b = b.scatter_reduce(1, self.destination[..., None].expand(-1, -1, channels), moved, reduce=reduce)
        return torch.cat([kept, b], dim=1)

    def output_index(self, n_tokens: int) -> torch.Tensor:
        """(I, N) long: the output token each input token ends up in."""
        n_images, n_kept = self.unmerged.shape
        device = self.unmerged.device
        index = torch.empty(n_images, n_tokens, dtype=torch.long, device=device)
        a_index = torch.empty(n_images, (n_tokens + 1) // 2, dtype=torch.long, device=device)
        a_index.scatter_(1, self.unmerged, torch.arange(n_kept, device=device).expand(n_images, -1))
        a_index.scatter_(1, self.merged, n_kept + self.destination)
        index[:, ::2] = a_index
        index[:, 1::2] = n_kept + torch.arange(n_tokens // 2, device=device)
        return index

    def output_source(self, n_tokens: int) -> torch.Tensor:
        """(I, N - r) long: the input token each output token continues (a B token absorbs merged A tokens)."""
        n_images = self.unmerged.shape[0]
        b_tokens = 2 * torch.arange(n_tokens // 2, device=self.unmerged.device) + 1  # (|B|,)
        return torch.cat([2 * self.unmerged, b_tokens.expand(n_images, -1)], dim=1)


def bipartite_soft_matching(metric: torch.Tensor, r: int, protect_first: bool) -> BipartiteMatching:
    """Match each A token to its most similar B token and merge the ``r`` best-matched A tokens.

    metric: (I, N, d) per-token features to compare (ToMe: the block's keys averaged over heads); cosine
    similarity in float32. ``protect_first``: token 0 (CLS, in A) is never merged and stays first. ``r`` must
    be at most the number of mergeable A tokens, ``(N - protect_first) // 2``.
    Ties in the ranking break toward the lower A index (a stable sort).
    """
    n_tokens = metric.shape[1]
    limit = (n_tokens - int(protect_first)) // 2
    if not 0 <= r <= limit:
        raise ValueError(f"r={r} is out of range for {n_tokens} tokens: at most {limit} can merge")
    unit = F.normalize(metric.float(), dim=-1)  # (I, N, d)
    scores = unit[:, ::2] @ unit[:, 1::2].transpose(1, 2)  # (I, |A|, |B|)
    if protect_first:
        scores[:, 0, :] = -torch.inf
    best, best_index = scores.max(dim=-1)  # (I, |A|)
    order = torch.sort(best, dim=-1, descending=True, stable=True).indices  # (I, |A|)
    merged = order[:, :r]
    unmerged = order[:, r:]
    if protect_first:
        unmerged = unmerged.sort(dim=-1).values  # the CLS token (A index 0) comes first
    return BipartiteMatching(unmerged=unmerged, merged=merged, destination=best_index.gather(1, merged))


def merge_weighted(
    matching: BipartiteMatching, x: torch.Tensor, sizes: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Size-weighted average merge: x (I, N, C), sizes (I, N, 1) -> x' (I, N - r, C), sizes' (I, N - r, 1).

    A merged token is ``sum(size_j * x_j) / sum(size_j)`` over the tokens it absorbs; its size is the sum.
    """
    summed = matching.merge(x * sizes, reduce="sum")
    new_sizes = matching.merge(sizes, reduce="sum")
    return summed / new_sizes, new_sizes
