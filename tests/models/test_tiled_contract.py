"""Anyres prompts with images of several sizes (tiles cut by unpadding) and OneVision's video: kept counts per
tile and frame, batches of rows that differ in their images, positions and cached decoding, for every registered
method. The rest of the contract runs on every family in ``tests/engine/test_contract.py``."""

from __future__ import annotations

import pytest

from tests.method_matrix import METHOD_MATRIX
from tests.tiled_contract import (
    check_batch_equals_single_rows,
    check_cached_decode_equals_recompute,
    check_fastv_positions,
    check_kept_counts,
    check_unsupported,
    is_supported,
)
from tests.tiled_models import NEXT, ONEVISION, PARTIAL_BUDGET

METHODS = sorted(METHOD_MATRIX)
FAMILIES = {"llava_next": NEXT, "llava_onevision": ONEVISION}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request):
    return FAMILIES[request.param]


@pytest.fixture(scope="module")
def model(family):
    return family.build()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("budget", [PARTIAL_BUDGET, 0.25])
def test_kept_count_is_the_budget_of_every_tile_and_frame(family, model, method, budget):
    if not is_supported(model, method):
        return check_unsupported(model, method)
    check_kept_counts(family, model, method, budget)


@pytest.mark.parametrize("method", METHODS)
def test_batch_of_two_equals_single_runs(family, model, method):
    if not is_supported(model, method):
        return check_unsupported(model, method)
    check_batch_equals_single_rows(family, model, method)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_fastv_prefill_and_decode_equal_a_masked_unpruned_run(family, attn):
    check_fastv_positions(family, family.build(attn=attn))


@pytest.mark.parametrize("method", ["fastervlm", "visionzip", "prumerge+"])
@pytest.mark.parametrize("positions", ["original", "contiguous"])
def test_cached_decode_equals_no_cache_recompute(family, model, method, positions):
    check_cached_decode_equals_recompute(family, model, method, positions)
