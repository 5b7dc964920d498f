"""Token merging primitives."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def contextual_merge(
    hidden: torch.Tensor, keys: torch.Tensor, n_contextual: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """VisionZip's contextual tokens: uniform targets, every other token merged into its most similar target.

    hidden: (I, R, D) the remaining (non-dominant) tokens in original order; keys: (I, R, d) their head-mean
    keys. Targets are ``arange(0, R, step)[:C]`` with ``step = max(1, R // C)``; each other token is assigned to
    the target with the highest key cosine similarity, and a contextual token is ``target + mean(assigned)``
    (the target itself is not averaged in, as in the reference). A target with nothing assigned stays as is.
    Returns (contextual (I, C, D), target_positions (C,) indices into R, assignment (I, R) long: the contextual
    token each remaining token belongs to).
    """
    n_images, n_remaining, _ = hidden.shape
    step = max(1, n_remaining // n_contextual)
    targets = torch.arange(0, n_remaining, step, device=hidden.device)[:n_contextual]  # (C,)
    is_target = torch.zeros(n_remaining, dtype=torch.bool, device=hidden.device)
    is_target[targets] = True
    others = torch.nonzero(~is_target).flatten()  # (R - C,)

    unit = F.normalize(keys.float(), dim=-1)  # (I, R, d)
    similarity = unit[:, others] @ unit[:, targets].transpose(1, 2)  # (I, R - C, C)
    choice = similarity.argmax(dim=-1)  # (I, R - C)
    one_hot = F.one_hot(choice, num_classes=targets.numel()).to(hidden.dtype)  # (I, R - C, C)
    counts = one_hot.sum(dim=1).clamp(min=1)[..., None]  # (I, C, 1)
    merged = one_hot.transpose(1, 2) @ hidden[:, others] / counts  # (I, C, D)
    contextual = hidden[:, targets] + merged

    assignment = torch.empty(n_images, n_remaining, dtype=torch.long, device=hidden.device)
    assignment[:, targets] = torch.arange(targets.numel(), device=hidden.device)
    assignment[:, others] = choice
    return contextual, targets, assignment
