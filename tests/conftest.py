"""Shared test settings: offline, deterministic, one CPU thread (tiny models only spin-wait on more)."""

from __future__ import annotations

import os
import sys

# ``tests`` is a package: helpers are imported as ``tests.tiny_models`` (the repository root on the path, also under
# ``--import-mode=importlib``); the tests folder stays on the path for modules that import ``tiny_models`` bare.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(1, os.path.dirname(os.path.abspath(__file__)))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
