"""Scoring and data reading: bad files are refused with the file, line and column, and never scored wrongly."""

from __future__ import annotations

import json

import pytest

from mmaccel.cli import main
from mmaccel.errors import DataError
from mmaccel.eval.benchmarks import get_benchmark
from mmaccel.eval.benchmarks.loaders import load_benchmark
from mmaccel.eval.generation import open_image
from tests.eval._benchmark_data import (
    llava_answers,
    llava_mme,
    llava_pope,
    llava_scienceqa,
    png_bytes,
    write_jsonl,
)


def _score(tmp_path, benchmark, data, predictions, *extra):
    argv = ["score", "--benchmark", benchmark, "--data", str(data), "--predictions", str(predictions)]
    return main([*argv, "--out", str(tmp_path / "m.json"), *extra])


def _metrics(tmp_path):
    return json.loads((tmp_path / "m.json").read_text())


# -- --missing wrong ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["llava", "lmms_eval", "vlmevalkit"])
def test_a_missing_pope_answer_is_wrong_under_every_protocol(tmp_path, protocol):
    data, answers = llava_pope(tmp_path / "data")
    # adversarial 1 (label yes) and random 10000002 (label no) unanswered; the others answered right
    kept = [answer for answer in answers if answer[0] not in (1, 10000002)]
    predictions = llava_answers(tmp_path / "a.jsonl", kept)
    assert _score(tmp_path, "pope", data, predictions, "--missing", "wrong", "--protocol", protocol) == 0
    metrics = _metrics(tmp_path)["metrics"]
    assert metrics["acc"] == pytest.approx(50.0)  # 2 right of 4: both missing answers are wrong
    assert metrics["splits"]["adversarial"]["acc"] == pytest.approx(50.0)
    assert metrics["splits"]["adversarial"]["recall"] == pytest.approx(0.0)  # its only yes question was missed
    assert metrics["splits"]["random"]["precision"] == pytest.approx(50.0)  # the missed no question: a false yes


def test_missing_answers_are_wrong_on_every_benchmark_row():
    from mmaccel.eval.benchmarks.base import CORRECTNESS_KEYS, Sample

    sample = Sample(id="1", question="Is there a dog?", answers=["yes"], meta={"category": "random"})
    for protocol in ("llava", "lmms_eval", "vlmevalkit"):
        row = get_benchmark("pope").score_missing(sample, protocol)
        assert row["correct"] == 0.0 and row["parsed"] == "no" and row["missing"]
    vqa = Sample(id="2", question="What?", answers=[""] * 10)  # even an empty ground truth is not matched
    row = get_benchmark("textvqa").score_missing(vqa, "lmms_eval")
    assert all(row[key] == 0.0 for key in CORRECTNESS_KEYS if key in row)


# -- text encoding, binary files, JSON errors -------------------------------------------------------------------------


def test_byte_order_mark_is_accepted_in_predictions_and_data(tmp_path):
    data, answers = llava_pope(tmp_path / "data")
    split = data / "coco" / "coco_pope_random.json"
    split.write_bytes(b"\xef\xbb\xbf" + split.read_bytes())
    predictions = llava_answers(tmp_path / "a.jsonl", answers)
    predictions.write_bytes(b"\xef\xbb\xbf" + predictions.read_bytes())
    assert _score(tmp_path, "pope", data, predictions) == 0
    assert _metrics(tmp_path)["predictions"]["matched"] == 4


def test_non_utf8_predictions_name_file_line_and_byte(tmp_path, capsys):
    data, answers = llava_pope(tmp_path / "data")
    predictions = llava_answers(tmp_path / "a.jsonl", answers)
    lines = predictions.read_bytes().split(b"\n")
    lines[2] = lines[2].replace(b'"No"', b'"N\xf6"')  # Latin-1 o-umlaut
    predictions.write_bytes(b"\n".join(lines))
    assert _score(tmp_path, "pope", data, predictions) == 2
    err = capsys.readouterr().err
    assert "a.jsonl:3: byte 0xf6 at column" in err and "is not UTF-8" in err
    assert "Traceback" not in err


def test_non_utf8_data_file_is_named(tmp_path, capsys):
    data, answers = llava_pope(tmp_path / "data")
    (data / "coco" / "coco_pope_random.json").write_bytes(b'{"question_id": 1, "text": "\xe9"}\n')
    predictions = llava_answers(tmp_path / "a.jsonl", answers)
    assert _score(tmp_path, "pope", data, predictions) == 2
    assert "coco_pope_random.json:1: byte 0xe9" in capsys.readouterr().err


def test_a_spreadsheet_passed_as_predictions_is_named(tmp_path, capsys):
    data, _ = llava_pope(tmp_path / "data")
    sheet = tmp_path / "answers.xlsx"
    sheet.write_bytes(b"PK\x03\x04\x14\x00\x06\x00\x08\x00\x00\x00!\x00\xff\xfe")
    assert _score(tmp_path, "pope", data, sheet) == 2
    assert "answers.xlsx: this is a ZIP archive (an .xlsx spreadsheet" in capsys.readouterr().err


def test_json_errors_name_line_and_column(tmp_path, capsys):
    data, _ = llava_pope(tmp_path / "data")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question_id": 1, "text": "Yes"}\n{"question_id": 2 "text": "No"}\n')
    assert _score(tmp_path, "pope", data, bad) == 2
    assert "bad.jsonl:2: malformed JSON line at column 19 (Expecting ',' delimiter)" in capsys.readouterr().err
    problems = tmp_path / "sqa" / "problems.json"
    problems.parent.mkdir()
    problems.write_text('{\n  "1": {"question": "q",\n  }\n}')
    with pytest.raises(DataError, match=r"problems.json:3: malformed JSON at column 3"):
        load_benchmark("scienceqa_img", problems.parent, images=False)


def test_a_folder_passed_as_predictions_is_called_a_folder(tmp_path, capsys):
    data, answers = llava_pope(tmp_path / "data")
    run = tmp_path / "run"
    llava_answers(run / "predictions.jsonl", answers)
    assert _score(tmp_path, "pope", data, run) == 2
    err = capsys.readouterr().err
    assert f"--predictions {run} is a folder" in err and "predictions.jsonl" in err
    assert "not found" not in err


# -- what the data must hold ------------------------------------------------------------------------------------------


def test_mme_scores_without_its_image_files(tmp_path):
    import shutil

    data, answers = llava_mme(tmp_path / "data")
    release = data / "MME_Benchmark_release_version"
    shutil.rmtree(release / "existence" / "images")  # only questions_answers_YN/ left
    (release / "code_reasoning" / "0020.png").unlink()
    predictions = llava_answers(tmp_path / "a.jsonl", answers)
    assert _score(tmp_path, "mme", data, predictions) == 0
    assert _metrics(tmp_path)["metrics"]["perception"] == pytest.approx(200.0)
    # mmaccel predictions carry the ids of an evaluation, which had the images: they still match
    ids = ["existence/images/000.jpg#0", "existence/images/000.jpg#1", "code_reasoning/0020.png#0",
           "code_reasoning/0020.png#1"]  # fmt: skip
    mmaccel = write_jsonl(
        tmp_path / "p.jsonl", [{"id": i, "prediction": p} for i, p in zip(ids, ["Yes", "No", "Yes", "Yes"])]
    )
    assert _score(tmp_path, "mme", data, mmaccel) == 0
    assert _metrics(tmp_path)["predictions"]["matched"] == 4


def test_an_evaluation_still_needs_the_mme_images(tmp_path):
    data, _ = llava_mme(tmp_path / "data")
    (data / "MME_Benchmark_release_version" / "code_reasoning" / "0020.png").unlink()
    with pytest.raises(DataError, match=r"0020.txt: no image named 0020\.\*"):
        load_benchmark("mme", data, images=True)


def test_a_second_prediction_for_a_text_only_scienceqa_question_is_refused(tmp_path, capsys):
    data, answers = llava_scienceqa(tmp_path / "data")
    predictions = llava_answers(tmp_path / "a.jsonl", [*answers, ("7", "Which", "A")])  # 7 has no image
    assert _score(tmp_path, "scienceqa_img", data, predictions) == 2
    err = capsys.readouterr().err
    assert "a.jsonl:4: second prediction for question 7 (first on line 3)" in err


def test_an_empty_pope_split_file_is_refused(tmp_path, capsys):
    data, answers = llava_pope(tmp_path / "data")
    (data / "coco" / "coco_pope_random.json").write_text("\n")
    predictions = llava_answers(tmp_path / "a.jsonl", answers[1:3])
    assert _score(tmp_path, "pope", data, predictions) == 2
    assert "coco_pope_random.json: no questions (an empty file)" in capsys.readouterr().err


def test_a_missing_pope_split_is_reported(tmp_path, capsys):
    data, answers = llava_pope(tmp_path / "data")
    (data / "coco" / "coco_pope_random.json").unlink()
    predictions = llava_answers(tmp_path / "a.jsonl", answers[1:3])
    assert _score(tmp_path, "pope", data, predictions) == 0
    assert _metrics(tmp_path)["dataset"]["missing_splits"] == ["popular", "random"]
    assert "not scored: no file of split(s) popular, random" in capsys.readouterr().out


def test_missing_image_files_are_refused_when_loading_for_an_evaluation(tmp_path):
    data, _ = llava_pope(tmp_path / "data")
    pope = get_benchmark("pope")
    assert pope.load(data, images=False)  # scoring reads no image
    with pytest.raises(DataError, match=r"val2014/COCO_1.jpg: image file not found \(question 1 of pope\)"):
        pope.load(data)
    (data / "val2014").mkdir()
    (data / "val2014" / "COCO_1.jpg").write_bytes(png_bytes())
    assert len(pope.load(data)) == 4


def test_a_truncated_image_names_its_file(tmp_path):
    image = tmp_path / "cut.png"
    image.write_bytes(png_bytes()[:40])
    with pytest.raises(DataError, match=r"cut.png: not a readable image"):
        open_image(image)
    with pytest.raises(DataError, match=r"missing.jpg: not a readable image"):
        open_image(tmp_path / "missing.jpg")


def test_a_corrupt_parquet_file_is_named(tmp_path):
    shard = tmp_path / "pope" / "data" / "test-00000-of-00001.parquet"
    shard.parent.mkdir(parents=True)
    shard.write_bytes(b"PAR1 this is not a parquet file")
    with pytest.raises(DataError, match=r"test-00000-of-00001.parquet: not a readable parquet file"):
        load_benchmark("pope", tmp_path / "pope", images=False)
