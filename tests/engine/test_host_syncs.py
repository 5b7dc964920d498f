"""In-LLM pruning does no per-row work: a batch of 8 dispatches exactly the ops and host syncs of a batch of 2.

Counted with a dispatch mode over one prefill: every aten op, the scalar reads (``aten._local_scalar_dense``:
``.item()``, ``int(t)``, ``bool(t)``) plus ``Tensor.tolist`` calls, and the ops whose output size depends on the
data (``nonzero``, ``unique``, boolean indexing), which are host syncs on an accelerator. Rows alternate between
one and two images and different text lengths (left padding), so every row-dependent path runs.
"""

from __future__ import annotations

import collections

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

import mmaccel
from tiny_models import batch_inputs, prompt_ids, tiny_llava

SYNC_OPS = {"_local_scalar_dense", "nonzero", "_unique2", "unique_dim", "unique_consecutive", "masked_select"}


class Counter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name == "index" and any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1]):
            name = "index (bool)"
        self.ops[name] += 1
        return func(*args, **(kwargs or {}))


class ToList(TorchFunctionMode):
    def __init__(self, counter: Counter) -> None:
        super().__init__()
        self.counter = counter

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.Tensor.tolist:
            self.counter.ops["tolist"] += 1
        return func(*args, **(kwargs or {}))


def _inputs(batch: int) -> dict[str, torch.Tensor]:
    n_images = [1 + row % 2 for row in range(batch)]
    prompts = [prompt_ids(n, text_before=1 + 3 * (row % 2), seed=row % 2) for row, n in enumerate(n_images)]
    return batch_inputs(prompts, n_images, seed=0)


def _count(model, method: str, batch: int, **options) -> collections.Counter[str]:
    inputs = _inputs(batch)
    counter = Counter()
    with mmaccel.apply(model, method, **options) as session, torch.no_grad(), ToList(counter), counter:
        model(**inputs)
    assert session.last_call.batch_size == batch
    return counter.ops


@pytest.mark.parametrize("positions", ["original", "contiguous"])
def test_fastv_prefill_dispatches_the_same_ops_and_syncs_at_batch_2_and_8(positions):
    model = tiny_llava()
    small = _count(model, "fastv", 2, budget=5, k=2, positions=positions)
    large = _count(model, "fastv", 8, budget=5, k=2, positions=positions)
    syncs = {name: n for name, n in large.items() if name in SYNC_OPS | {"index (bool)", "tolist"}}
    assert syncs == {name: small[name] for name in syncs}
    assert sum(large.values()) == sum(small.values())
    assert large["_local_scalar_dense"] + large["tolist"] < 20  # a few reads per call, none per row


def test_fastv_keeps_the_budget_in_every_row_of_the_batch():
    model = tiny_llava()
    with mmaccel.apply(model, "fastv", budget=5, k=2) as session, torch.no_grad():
        model(**_inputs(8))
    for row, stats in enumerate(session.last_call.stats):
        assert stats.stages["llm_layer_2"] == (16 * (1 + row % 2), 5 * (1 + row % 2))
