"""Pure tensor functions on hand-made tensors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmaccel.ops.merge import contextual_merge
from mmaccel.ops.pool import pool_grid, pool_grid_shape
from mmaccel.ops.select import keep_count, topk_keep


def test_keep_count():
    assert keep_count(64, 576) == 64
    assert keep_count(0.25, 576) == 144
    assert keep_count(0.001, 16) == 1
    assert keep_count(1.0, 16) == 16
    with pytest.raises(ValueError, match="more visual tokens"):
        keep_count(17, 16)


def test_topk_keep_sorted_and_ties_toward_lower_index():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.9, 0.2], [1.0, 1.0, 1.0, 1.0, 1.0]])
    assert topk_keep(scores, 2).tolist() == [[1, 3], [0, 1]]
    assert topk_keep(scores, 3).tolist() == [[1, 2, 3], [0, 1, 2]]
    assert topk_keep(scores, 9).tolist() == [[0, 1, 2, 3, 4]] * 2


@pytest.mark.parametrize(
    ("h", "w", "n", "shape"),
    [
        (24, 24, 64, (8, 8)),
        (24, 24, 144, (12, 12)),
        (4, 4, 8, (2, 4)),
        (4, 4, 4, (2, 2)),
        (4, 4, 5, (1, 5)) if False else (4, 4, 2, (1, 2)),
    ],
)
def test_pool_grid_shape(h, w, n, shape):
    assert pool_grid_shape(h, w, n) == shape


def test_pool_grid_averages_blocks():
    features = torch.arange(16.0).reshape(1, 16, 1)  # a 4x4 raster grid
    pooled, groups = pool_grid(features, 4, 4, 4)
    assert pooled.flatten().tolist() == [2.5, 4.5, 10.5, 12.5]
    assert groups.tolist() == [0, 0, 1, 1, 0, 0, 1, 1, 2, 2, 3, 3, 2, 2, 3, 3]


def _contextual_reference(hidden, keys, n_contextual):
    """Straight loop over the reference pseudo-code, one image at a time."""
    out = []
    for x, k in zip(hidden, keys):
        n = x.shape[0]
        step = max(1, n // n_contextual)
        targets = list(range(0, n, step))[:n_contextual]
        others = [i for i in range(n) if i not in targets]
        unit = F.normalize(k, dim=-1)
        tokens = []
        assign = (unit[others] @ unit[targets].T).argmax(-1)
        for c, t in enumerate(targets):
            members = [others[j] for j in range(len(others)) if assign[j] == c]
            extra = x[members].mean(0) if members else torch.zeros_like(x[t])
            tokens.append(x[t] + extra)
        out.append(torch.stack(tokens))
    return torch.stack(out)


def test_contextual_merge_matches_reference_loop():
    torch.manual_seed(1)
    hidden, keys = torch.randn(2, 13, 6), torch.randn(2, 13, 4)
    merged, targets, assignment = contextual_merge(hidden, keys, 4)
    torch.testing.assert_close(merged, _contextual_reference(hidden, keys, 4))
    assert targets.tolist() == [0, 3, 6, 9]
    assert assignment[:, targets].tolist() == [[0, 1, 2, 3]] * 2
