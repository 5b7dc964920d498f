"""Append-only prediction files: torn last lines, damaged files, merging part files in sample order."""

from __future__ import annotations

import json

import pytest

from mmaccel.errors import DataError
from mmaccel.eval import distributed


def _write(path, records, tail=""):
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + tail)


def test_torn_last_line_is_ignored_and_cut_on_repair(tmp_path):
    path = tmp_path / "p.jsonl"
    _write(path, [{"id": "a"}, {"id": "b"}], tail='{"id": "c", "predic')
    assert [r["id"] for r in distributed.read_records(path)] == ["a", "b"]
    assert path.read_text().endswith('"predic')  # reading alone changes nothing
    distributed.read_records(path, repair=True)
    assert path.read_text() == '{"id": "a"}\n{"id": "b"}\n'
    distributed.append_records(path, [{"id": "c"}])
    assert [r["id"] for r in distributed.read_records(path)] == ["a", "b", "c"]


def test_complete_json_without_newline_counts_as_torn(tmp_path):
    path = tmp_path / "p.jsonl"
    _write(path, [{"id": "a"}], tail='{"id": "b"}')
    assert [r["id"] for r in distributed.read_records(path, repair=True)] == ["a"]
    assert path.read_text() == '{"id": "a"}\n'


def test_damage_before_the_end_is_an_error(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "a"}\nnot json\n{"id": "b"}\n')
    with pytest.raises(DataError, match="line 2"):
        distributed.read_records(path)


def test_merge_orders_by_sample_and_keeps_the_first_record_of_an_id(tmp_path):
    _write(tmp_path / "predictions.jsonl", [{"id": "b", "v": 1}])
    _write(tmp_path / "predictions.part-0.jsonl", [{"id": "c", "v": 2}, {"id": "b", "v": 9}])
    _write(tmp_path / "predictions.part-1.jsonl", [{"id": "a", "v": 3}], tail='{"id": "d"')
    merged = distributed.merge_parts(tmp_path, ["a", "b", "c", "d"])
    assert [(r["id"], r["v"]) for r in merged] == [("a", 3), ("b", 1), ("c", 2)]
    assert distributed.part_files(tmp_path) == []
    assert [r["id"] for r in distributed.read_records(tmp_path / "predictions.jsonl")] == ["a", "b", "c"]
