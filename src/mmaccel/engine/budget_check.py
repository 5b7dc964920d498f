"""Budgets against what they achieve: the layer-averaged visual tokens each sample asked for and got.

A budget is read per unit (an image, an anyres tile, a video frame): :meth:`TokenMethod.requested_tokens` says
what it asks for on a unit, as a layer average counted by the method's ``budget_convention``. Rounding, a grid
that cannot hold the count, a tower too shallow or a schedule out of reach can make the achieved count differ;
:func:`record_budget` stores the request in every :class:`SampleStats` and logs one warning per configuration
(method, budget and options) whose achieved count is more than :data:`TOLERANCE` off the request.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from mmaccel.methods.base import layer_average

if TYPE_CHECKING:
    from mmaccel.engine.context import SampleStats, TokenContext
    from mmaccel.methods.base import TokenMethod

log = logging.getLogger(__name__)

TOLERANCE = 0.05  # relative distance between achieved and requested tokens above which a run is off budget

_WORDING = {"processed": "the tokens each layer processes", "after_pruning": "each layer after its pruning"}
_warned: set[tuple[tuple[str, str], ...]] = set()  # configurations already warned about


def off_budget(requested: float | None, achieved: float, tolerance: float = TOLERANCE) -> bool:
    """Whether ``achieved`` misses ``requested`` by more than ``tolerance`` of it (never when nothing was asked)."""
    return requested is not None and abs(achieved - requested) > tolerance * requested


def record_budget(method: TokenMethod, context: TokenContext, units: Sequence[Sequence[int]]) -> None:
    """Store what the budget asks for in every sample of ``context``; warn once per configuration when a sample's
    achieved layer average is more than 5 % off.

    ``units``: per sample, the visual tokens of each unit its budget applies to. Called once the prompt that
    reaches the language model is known: ``layer_tokens`` then hold the counts of pre-LLM and in-tower methods;
    in-LLM methods prune later, inside the layers, and are checked on their :meth:`planned_layer_tokens`.
    """
    for stats, sample_units in zip(context.stats, units, strict=True):
        n_layers = len(stats.layer_tokens)
        stats.budget_convention = method.budget_convention
        if not n_layers:
            continue
        asked = [method.requested_tokens(n, n_layers) for n in sample_units]
        stats.requested_tokens = None if None in asked else float(sum(asked))
        achieved = _achieved(method, stats, sample_units)
        if off_budget(stats.requested_tokens, achieved):
            _warn_once(method, stats, achieved)


def _achieved(method: TokenMethod, stats: SampleStats, units: Sequence[int]) -> float:
    n_layers = len(stats.layer_tokens)
    plans = [method.planned_layer_tokens(n, n_layers) for n in units]
    if not plans or any(plan is None for plan in plans):
        return stats.achieved_tokens
    per_layer = [sum(column) for column in zip(*plans)]  # type: ignore[arg-type]
    return layer_average(per_layer, method.budget_convention)


def _warn_once(method: TokenMethod, stats: SampleStats, achieved: float) -> None:
    described = method.describe()
    key = tuple(sorted((name, repr(value)) for name, value in described.items()))
    if key in _warned:
        return
    _warned.add(key)
    requested = stats.requested_tokens
    assert requested is not None
    options = ", ".join(f"{name}={value!r}" for name, value in described.items() if name != "method")
    log.warning(
        "%s (%s): the budget asks for %.1f visual tokens per layer on average and gets %.1f (%+.1f %%) on a sample "
        "of %d visual tokens, counting %s; nearby budgets may give the same tokens (warned once per configuration)",
        method.name,
        options,
        requested,
        achieved,
        100.0 * (achieved - requested) / requested,
        stats.visual_tokens,
        _WORDING[stats.budget_convention],
    )
