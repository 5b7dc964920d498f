"""The README's support matrix is the one the code's declarations give."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmaccel import support
from mmaccel.models.families import FAMILIES, registered_families

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def matrix():
    return support.support_matrix()


def test_readme_support_matrix_is_up_to_date(matrix):
    assert support.readme_section(README.read_text()) == support.render(matrix), (
        f"README.md's support matrix is stale; regenerate it with `{support.REGENERATE}`"
    )


def test_matrix_covers_every_builtin_method_and_registered_family(matrix):
    assert matrix.methods == support.builtin_methods()
    assert [entry.adapter for entry in matrix.families] == [entry.adapter for entry in registered_families()]
    for method in matrix.methods:
        for entry in matrix.families:
            reason = matrix.reasons[method][entry.adapter]
            assert reason is None or reason.strip(), (method, entry.adapter)


def test_every_registered_adapter_is_in_the_catalogue():
    from mmaccel.models.registry import ADAPTERS

    assert {adapter.name for adapter in ADAPTERS} <= {entry.adapter for entry in FAMILIES}


def test_check_mode_flags_a_stale_readme(tmp_path, matrix, monkeypatch):
    monkeypatch.setattr(support, "support_matrix", lambda: matrix)
    stale = tmp_path / "README.md"
    stale.write_text(f"# x\n\n{support.START_MARKER}\n| old |\n{support.END_MARKER}\n\ntail\n")
    assert support.main(["--check", "--readme", str(stale)]) == 1
    assert support.main(["--write", "--readme", str(stale)]) == 0
    text = stale.read_text()
    assert text.startswith("# x\n\n") and text.endswith("\n\ntail\n")
    assert support.main(["--check", "--readme", str(stale)]) == 0


def test_markers_must_appear_once():
    with pytest.raises(ValueError, match="exactly once"):
        support.readme_section("no markers here")
