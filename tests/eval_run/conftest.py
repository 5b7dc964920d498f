"""Shared fixtures: the embedded toy model, loaded once, and a small evaluation config."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def toy():
    import mmaccel

    return mmaccel.load("toy")


@pytest.fixture
def small_config(tmp_path):
    """Two suites at tiny sizes (3 GQA questions; 1 image per MME subtask = 10 questions), three configs."""
    from mmaccel.eval.config import EvalConfig

    def make(**overrides):
        values = dict(
            benchmarks=["shapes-gqa", "shapes-mme"],
            methods=["none", "visionzip", "fastv"],
            budgets=[0.5],
            limit=1,
            batch_size=4,
            max_new_tokens=4,
            out=str(tmp_path / "out"),
            data=str(tmp_path / "data"),
        )
        values.update(overrides)
        return EvalConfig(**values)

    return make
