"""Every registered method with hyper-parameters valid on the tiny models: one row per method.

Adding a method to the contract suite is adding a row here. ``budget`` is an int valid for a 16-token image.
"""

from __future__ import annotations

METHOD_MATRIX: dict[str, dict] = {
    "random": {"seed": 3},
    "pool": {},
    "fastv": {"k": 2},
    "visionzip": {},
    "fastervlm": {},
    "sparsevlm": {"layers": (0, 1, 2)},  # prunes after layers 0, 1 and 2 of the 4
    "prumerge": {},
    "prumerge+": {},
    "tome": {},
    "evit": {},
    "downsample": {},  # acts before the processor: not supported on fixed-resolution LLaVA-1.5
}

PARTIAL_BUDGET = 6  # tokens per image kept in the contract tests (of 16)
