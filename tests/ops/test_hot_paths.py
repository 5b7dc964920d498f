"""Batched selection and clustering equal their per-row / exact-difference definitions, without large tensors."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from mmaccel.ops.cluster import dpc_knn
from mmaccel.ops.select import topk_keep_in_groups, topk_mask_in_groups


@pytest.mark.parametrize("seed", range(6))
def test_topk_mask_in_groups_equals_per_row_per_group_selection(seed):
    generator = torch.Generator().manual_seed(seed)
    batch, length, n_groups = 5, 40, 3
    # scores in {0, 1, 2}: many ties, which must break toward the lower position in every group
    scores = torch.randint(0, 3, (batch, length), generator=generator).float()
    groups = torch.randint(-1, n_groups, (batch, length), generator=generator)
    groups[1] = -1  # a row without visual tokens
    sizes = torch.stack([(groups == g).sum(1) for g in range(n_groups)], dim=1)  # (B, G)
    counts = (torch.rand(batch, n_groups, generator=generator) * (sizes + 1)).long().clamp(max=sizes)  # (B, G)
    mask = topk_mask_in_groups(scores, groups, counts)
    for row in range(batch):
        expected = topk_keep_in_groups(
            scores[row], groups[row], {g: int(counts[row, g]) for g in range(n_groups) if sizes[row, g] > 0}
        )
        assert torch.nonzero(mask[row]).flatten().tolist() == expected.tolist()


def _pairwise_differences_norm(a: torch.Tensor, b: torch.Tensor, **kwargs) -> torch.Tensor:
    """The former distance formula: (N, N) through an (N, N, D) tensor of differences."""
    return (a[:, None, :] - b[None, :, :]).norm(dim=-1)


class LargestOutput(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(tensor, torch.Tensor):
                self.largest = max(self.largest, tensor.numel())
        return out


@pytest.mark.parametrize("kind", ["normal", "integer", "duplicates"])
@pytest.mark.parametrize("seed", range(4))
def test_dpc_knn_gives_the_clusters_of_the_exact_difference_formula(kind, seed, monkeypatch):
    generator = torch.Generator().manual_seed(seed)
    n_tokens, dim, n_clusters = 60, 48, 7
    if kind == "normal":
        x = torch.randn(n_tokens, dim, generator=generator)
    elif kind == "integer":  # equal distances and equal densities everywhere
        x = torch.randint(-1, 2, (n_tokens, dim), generator=generator).float()
    else:  # identical tokens: zero distances, equal densities
        x = torch.randn(n_tokens // 4, dim, generator=generator).repeat(4, 1)
    clusters = dpc_knn(x, n_clusters)
    monkeypatch.setattr(torch, "cdist", _pairwise_differences_norm)
    expected = dpc_knn(x, n_clusters)
    assert clusters.centres.tolist() == expected.centres.tolist()
    assert clusters.assignment.tolist() == expected.assignment.tolist()
    torch.testing.assert_close(clusters.merged, expected.merged)


def test_dpc_knn_builds_no_tensor_larger_than_tokens_squared():
    n_tokens, dim = 50, 256  # N * N * D would be 640000 elements
    x = torch.randn(n_tokens, dim, generator=torch.Generator().manual_seed(0))
    with LargestOutput() as mode:
        dpc_knn(x, 6)
    assert mode.largest <= max(n_tokens * n_tokens, n_tokens * dim)
