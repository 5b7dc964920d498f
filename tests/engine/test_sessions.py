"""A session is single-use: ``apply`` opens it, its ``with`` block (or ``close()``) closes it, and entering it
again, or twice at once, is refused with a message saying to call ``mmaccel.apply`` again."""

from __future__ import annotations

import pytest
import torch

import mmaccel
from mmaccel.errors import ConfigError, NotSupportedError
from tests.tiny_models import FAMILIES, GENERATE_KWARGS


@pytest.fixture(scope="module")
def model():
    return FAMILIES["llava"].build()


@pytest.fixture(scope="module")
def inputs(model):
    return FAMILIES["llava"].inputs(model, [(1, 0)])


def _length(model, inputs) -> int:
    """Sequence length the language model sees (shorter under a pre-LLM method)."""
    with torch.no_grad():
        return model(**inputs).logits.shape[1]


def test_a_closed_session_cannot_be_entered_again(model, inputs):
    full = _length(model, inputs)
    session = mmaccel.apply(model, "visionzip", budget=4)
    with session:
        assert _length(model, inputs) < full
    with pytest.raises(ConfigError, match=r"session is closed.*call mmaccel\.apply"), session:
        pytest.fail("a closed session ran its block")
    assert session.closed
    assert _length(model, inputs) == full
    with mmaccel.apply(model, "visionzip", budget=4):  # a new session works
        assert _length(model, inputs) < full


def test_a_session_closed_by_close_cannot_be_entered(model, inputs):
    session = mmaccel.apply(model, "fastv", budget=4, k=2)
    model.generate(**inputs, max_new_tokens=2, **GENERATE_KWARGS)  # used without a with block, as the eval runner does
    assert len(session.calls) == 1
    session.close()
    session.close()  # closing twice is harmless
    with pytest.raises(ConfigError, match=r"call mmaccel\.apply"), session:
        pytest.fail("a closed session ran its block")


def test_an_open_session_cannot_be_entered_twice(model, inputs):
    full = _length(model, inputs)
    with mmaccel.apply(model, "visionzip", budget=4) as session:
        with pytest.raises(ConfigError, match=r"already entered.*mmaccel\.apply"), session:
            pytest.fail("a nested block of the same session ran")
        assert _length(model, inputs) < full  # the outer block still applies the method
    assert session.closed
    assert _length(model, inputs) == full


def test_a_session_cannot_be_opened_twice(model):
    session = mmaccel.apply(model, "pool", budget=4)
    try:
        with pytest.raises(ConfigError, match=r"opened already.*mmaccel\.apply"):
            session.open()
    finally:
        session.close()
    with pytest.raises(ConfigError, match=r"mmaccel\.apply"):
        session.open()


def test_closing_an_old_session_leaves_a_newer_one_applied(model, inputs):
    full = _length(model, inputs)
    old = mmaccel.apply(model, "visionzip", budget=4)
    old.close()
    with mmaccel.apply(model, "visionzip", budget=4):
        old.close()
        assert _length(model, inputs) < full
        with pytest.raises(NotSupportedError, match="already applied"):
            mmaccel.apply(model, "pool", budget=4)
    assert _length(model, inputs) == full
