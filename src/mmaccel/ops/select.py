"""Budgets and top-k selection that keeps the original token order."""

from __future__ import annotations

import torch


def keep_count(budget: int | float, n_tokens: int) -> int:
    """Number of tokens to keep out of ``n_tokens`` for a budget.

    ``budget`` is an ``int`` (tokens kept, at most ``n_tokens``) or a ``float`` in (0, 1] (fraction kept; at
    least one token). Validation of the range happens where the budget is given (``TokenMethod``); here an int
    larger than ``n_tokens`` is an error because it can only come from an image smaller than expected.
    """
    if isinstance(budget, bool):
        raise TypeError("budget must be an int or a float, not bool")
    if isinstance(budget, int):
        if budget > n_tokens:
            raise ValueError(f"budget={budget} asks for more visual tokens than the image has ({n_tokens})")
        return budget
    return max(1, min(n_tokens, round(budget * n_tokens)))


def topk_keep(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` highest scores per row, sorted ascending (original order kept).

    scores: (B, N) -> (B, k) long. Ties break toward the lower index, deterministically.
    """
    if k >= scores.shape[-1]:
        return torch.arange(scores.shape[-1], device=scores.device).expand(scores.shape[0], -1).clone()
    # A stable descending sort breaks ties by position; topk's tie order is implementation-defined.
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices  # (B, N)
    return order[:, :k].sort(dim=-1).values


def topk_keep_in_groups(scores: torch.Tensor, groups: torch.Tensor, counts: dict[int, int]) -> torch.Tensor:
    """Keep the top tokens of each group of a 1-D sequence; tokens outside every group (group -1) are all kept.

    scores: (L,), groups: (L,) long with -1 for tokens that are never pruned, counts: group id -> tokens kept.
    Returns the kept positions (L',) sorted ascending.
    """
    kept = [torch.nonzero(groups < 0).flatten()]
    for group_id, k in counts.items():
        members = torch.nonzero(groups == group_id).flatten()  # (n_g,)
        chosen = topk_keep(scores[members][None], k)[0]
        kept.append(members[chosen])
    return torch.cat(kept).sort().values


def topk_mask_in_groups(scores: torch.Tensor, groups: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Keep the top ``counts[b, g]`` tokens of each group g of each row b; tokens of group -1 are all kept.

    scores: (B, L); groups: (B, L) long, -1 for tokens that are never pruned; counts: (B, G) long, tokens kept
    per group (G above every group id). Returns (B, L) bool. Ties break toward the lower position, as
    :func:`topk_keep` per group: one stable sort by score, then one stable sort by group, with no per-row loop.
    """
    length = scores.shape[-1]
    by_score = torch.sort(scores, dim=-1, descending=True, stable=True).indices  # (B, L)
    grouped = groups.gather(1, by_score)  # (B, L) group of each token in score order
    by_group = torch.sort(grouped, dim=-1, stable=True)  # group ascending, then score descending
    order = by_score.gather(1, by_group.indices)  # (B, L) positions
    sorted_groups = by_group.values  # (B, L)
    slot = torch.arange(length, device=scores.device).expand_as(sorted_groups)  # (B, L)
    first = torch.ones_like(sorted_groups, dtype=torch.bool)
    first[:, 1:] = sorted_groups[:, 1:] != sorted_groups[:, :-1]  # a group starts here
    start = torch.where(first, slot, 0).cummax(dim=-1).values  # (B, L) slot where the token's group starts
    limit = counts.gather(1, sorted_groups.clamp(min=0))  # (B, L)
    chosen = (sorted_groups < 0) | (slot - start < limit)  # (B, L) in sorted order
    return torch.zeros_like(chosen).scatter_(1, order, chosen)
