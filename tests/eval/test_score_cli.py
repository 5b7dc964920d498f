"""``mmaccel score`` end to end on tiny folders in both layouts, and its handling of bad input."""

from __future__ import annotations

import json

import pytest

from mmaccel.cli import main
from tests.eval._benchmark_data import (
    LLAVA_BUILDERS,
    LMMS_LAB_BUILDERS,
    llava_answers,
    llava_pope,
    mmaccel_predictions,
    write_parquet,
)


@pytest.mark.parametrize("benchmark", sorted(LLAVA_BUILDERS))
def test_score_llava_layout_with_llava_answer_file(benchmark, tmp_path, capsys):
    build, headline, expected = LLAVA_BUILDERS[benchmark]
    data, answers = build(tmp_path / "data")
    predictions = llava_answers(tmp_path / "answers" / "model.jsonl", answers)
    assert main(["score", "--benchmark", benchmark, "--data", str(data), "--predictions", str(predictions)]) == 0
    out = capsys.readouterr().out
    result = json.loads((predictions.parent / f"model.{benchmark}.llava.metrics.json").read_text())
    assert result["metrics"]["headline"] == headline
    assert result["metrics"][headline] == pytest.approx(expected)
    assert result["dataset"]["layout"] == "llava"
    assert result["predictions"]["missing"] == 0
    assert result["predictions"]["excluded"] == (1 if benchmark == "scienceqa_img" else 0)  # text-only question
    assert headline in out
    assert f"{expected:.2f}" in out


@pytest.mark.parametrize("benchmark", sorted(LMMS_LAB_BUILDERS))
def test_score_lmms_lab_layout_with_mmaccel_predictions(benchmark, tmp_path, capsys):
    build, headline, expected = LMMS_LAB_BUILDERS[benchmark]
    data, items = build(tmp_path / "data")
    predictions = mmaccel_predictions(tmp_path / "predictions.jsonl", items)
    out_path = tmp_path / "out" / "metrics.json"
    argv = ["score", "--benchmark", benchmark, "--data", str(data), "--predictions", str(predictions)]
    assert main([*argv, "--out", str(out_path)]) == 0
    result = json.loads(out_path.read_text())
    assert result["dataset"]["layout"] == "lmms_lab"
    assert result["metrics"][headline] == pytest.approx(expected)
    assert f"{expected:.2f}" in capsys.readouterr().out


def test_score_records_pope_version_and_protocol(tmp_path):
    data, answers = llava_pope(tmp_path / "data")
    predictions = llava_answers(tmp_path / "a.jsonl", answers)
    out = tmp_path / "m.json"
    argv = ["score", "--benchmark", "pope", "--data", str(data), "--predictions", str(predictions), "--out", str(out)]
    assert main([*argv, "--protocol", "lmms_eval"]) == 0
    result = json.loads(out.read_text())
    assert result["protocol"] == "lmms_eval"
    assert result["reference"].startswith("EvolvingLMMs-Lab/lmms-eval")
    assert result["dataset"]["per_split"] == {"adversarial": 2, "random": 2}
    assert "unrecognised POPE release (4 questions)" in result["dataset"]["version"]
    assert result["metrics"]["headline"] == "f1"


def _run(tmp_path, benchmark, data, predictions, *extra):
    argv = ["score", "--benchmark", benchmark, "--data", str(data), "--predictions", str(predictions)]
    return main([*argv, "--out", str(tmp_path / "m.json"), *extra])


def test_missing_predictions_file_is_a_clear_error(tmp_path, capsys):
    data, _ = llava_pope(tmp_path / "data")
    assert _run(tmp_path, "pope", data, tmp_path / "nope.jsonl") == 2
    assert "nope.jsonl: file not found" in capsys.readouterr().err


def test_malformed_json_line_names_file_and_line(tmp_path, capsys):
    data, _ = llava_pope(tmp_path / "data")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question_id": 1, "text": "Yes"}\n{"question_id": 2, "text": \n')
    assert _run(tmp_path, "pope", data, bad) == 2
    assert "bad.jsonl:2: malformed JSON line" in capsys.readouterr().err


def test_prediction_line_without_fields_names_line_and_keys(tmp_path, capsys):
    data, _ = llava_pope(tmp_path / "data")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question_id": 1, "answer": "Yes"}\n')
    assert _run(tmp_path, "pope", data, bad) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl:1:" in err
    assert "['answer', 'question_id']" in err


def test_unknown_ids_fail_unless_ignored(tmp_path, capsys):
    data, answers = llava_pope(tmp_path / "data")
    predictions = llava_answers(tmp_path / "a.jsonl", [*answers, (20000001, "p", "Yes"), (99, "p", "No")])
    assert _run(tmp_path, "pope", data, predictions) == 2
    err = capsys.readouterr().err
    assert "2 prediction(s) match no pope question" in err
    assert "20000001" in err
    assert _run(tmp_path, "pope", data, predictions, "--unknown", "ignore") == 0
    result = json.loads((tmp_path / "m.json").read_text())
    assert result["predictions"]["unknown"] == 2
    assert result["predictions"]["unknown_ids"] == ["20000001", "99"]


def test_questions_without_predictions_fail_or_count_as_wrong(tmp_path, capsys):
    data, answers = llava_pope(tmp_path / "data")
    predictions = llava_answers(tmp_path / "a.jsonl", answers[1:])  # question 10000002 unanswered
    assert _run(tmp_path, "pope", data, predictions) == 2
    err = capsys.readouterr().err
    assert "1 of 4 question(s) have no prediction" in err
    assert "10000002" in err
    assert _run(tmp_path, "pope", data, predictions, "--missing", "wrong") == 0
    result = json.loads((tmp_path / "m.json").read_text())
    assert result["predictions"]["missing_ids"] == ["10000002"]
    assert result["metrics"]["splits"]["random"]["n"] == 2  # scored, as wrong
    assert _run(tmp_path, "pope", data, predictions, "--missing", "skip") == 0
    assert json.loads((tmp_path / "m.json").read_text())["metrics"]["splits"]["random"]["n"] == 1


def test_duplicate_prediction_names_both_lines(tmp_path, capsys):
    data, answers = llava_pope(tmp_path / "data")
    predictions = llava_answers(tmp_path / "a.jsonl", [*answers, answers[0]])
    assert _run(tmp_path, "pope", data, predictions) == 2
    assert "a.jsonl:5: second prediction for question 10000002 (first on line 1)" in capsys.readouterr().err


def test_directory_matching_no_layout_and_unknown_benchmark(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    predictions = llava_answers(tmp_path / "a.jsonl", [(1, "p", "Yes")])
    assert _run(tmp_path, "pope", tmp_path / "empty", predictions) == 2
    assert "matches neither data layout of pope" in capsys.readouterr().err
    assert _run(tmp_path, "nosuch", tmp_path / "empty", predictions) == 2
    err = capsys.readouterr().err
    assert "unknown benchmark 'nosuch'" in err
    assert "mmbench" in err


def test_missing_parquet_column_is_named(tmp_path, capsys):
    write_parquet(tmp_path / "data" / "data" / "test-00000-of-00001.parquet", [{"question_id": "1", "question": "q"}])
    predictions = mmaccel_predictions(tmp_path / "p.jsonl", [("1", "Yes")])
    assert _run(tmp_path, "pope", tmp_path / "data", predictions) == 2
    assert "missing column(s) answer, category" in capsys.readouterr().err
