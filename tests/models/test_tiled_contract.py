"""The method contract on the anyres families (LLaVA-NeXT, LLaVA-OneVision): the checks of ``tiled_contract`` for
every registered method on each family's tiny model. Family-specific facts and layouts are in the families' own
test modules."""

from __future__ import annotations

import pytest

import mmaccel
from mmaccel.errors import NotSupportedError
from tests.method_matrix import METHOD_MATRIX
from tests.tiled_contract import (
    check_batch_equals_single_rows,
    check_cached_decode_equals_recompute,
    check_deterministic,
    check_fastv_positions,
    check_keep_all_is_identical,
    check_kept_counts,
    check_restored,
    check_unsupported,
    is_supported,
)
from tests.tiled_models import NEXT, ONEVISION, PARTIAL_BUDGET, TILE_TOKENS

METHODS = sorted(METHOD_MATRIX)
FAMILIES = {"llava_next": NEXT, "llava_onevision": ONEVISION}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request):
    return FAMILIES[request.param]


@pytest.fixture(scope="module")
def model(family):
    return family.build()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("budget", [1.0, TILE_TOKENS])
def test_keep_all_budget_is_bit_identical(family, model, method, budget):
    if not is_supported(model, method):
        return check_unsupported(model, method)
    check_keep_all_is_identical(family, model, method, budget)


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


@pytest.mark.parametrize("method", METHODS)
def test_same_inputs_same_keep_indices(family, model, method):
    if not is_supported(model, method):
        return check_unsupported(model, method)
    check_deterministic(family, model, method)


@pytest.mark.parametrize("method", METHODS)
def test_model_restored_after_exit_and_after_error(family, model, method):
    if not is_supported(model, method):
        return check_unsupported(model, method)
    check_restored(family, model, method)


@pytest.mark.parametrize("method", ["tome", "evit"])
def test_in_tower_methods_are_not_supported_with_the_reason(model, method):
    with pytest.raises(NotSupportedError, match="anyres layout"):
        mmaccel.apply(model, method, budget=4)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_fastv_prefill_and_decode_equal_a_masked_unpruned_run(family, attn):
    check_fastv_positions(family, family.build(attn=attn))


@pytest.mark.parametrize("method", ["fastervlm", "visionzip", "prumerge+"])
@pytest.mark.parametrize("positions", ["original", "contiguous"])
def test_cached_decode_equals_no_cache_recompute(family, model, method, positions):
    check_cached_decode_equals_recompute(family, model, method, positions)
