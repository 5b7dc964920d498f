"""Video-MME, MVBench and NExT-QA: per-item test vectors, loaders on tiny files in each layout, aggregation."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from mmaccel.cli import main
from mmaccel.errors import ConfigError, DataError
from mmaccel.eval.benchmarks import Sample, get_benchmark
from mmaccel.eval.benchmarks.mcq import (
    extract_mcq_answer,
    leading_letter,
    mvbench_check_ans,
    mvbench_lmms_eval_correct,
    parse_multi_choice_response,
    videomme_lmms_eval_legacy,
    videomme_official,
)
from mmaccel.eval.benchmarks.score import score_predictions
from mmaccel.eval.benchmarks.video_common import read_srt, subtitle_text
from tests.eval._benchmark_data import mmaccel_predictions, write_json, write_parquet

# ------------------------------------------------------------------------------------------------- Video-MME

# prediction, official, lmms-eval 2026-04 (extract_mcq_answer), lmms-eval before 2026-04; "" = no letter
VIDEOMME_VECTORS = [
    ("C", "C", "C", "C"),
    ("C. Berries.", "C", "C", "C"),
    ("(C)", "C", "C", "C"),
    ("**C**", "C", "C", "C"),
    ("The best answer is C", "C", "C", "C"),
    ("The correct answer is (C).", "C", "C", "C"),
    ("Best answer: C", "B", "C", "C"),  # official: its prefix list lacks a comma, "Best" gives B
    ("Answer: C", "A", "C", "A"),  # the A of "Answer"
    ("Based on the video, the answer is C.", "B", "C", "B"),  # the B of "Based"
    ("Candles are the most numerous, so B", "C", "B", "C"),  # the C of "Candles"
    ("The answer is B, not C", "B", "B", "B"),
    ("I think it is C", "C", "C", "C"),
    ("<think>A or B?</think> C", "A", "C", "A"),
    ("\\boxed{D}", "D", "D", "D"),
    ("Option D", "D", "D", "D"),
    ("It could be A or C", "A", "", "A"),
    ("All of them", "A", "", "A"),
    ("There are more berries than apples.", "", "", ""),
    ("c", "", "", ""),
    ("", "", "", ""),
]


@pytest.mark.parametrize(("prediction", "official", "current", "legacy"), VIDEOMME_VECTORS)
def test_videomme_extraction_vectors(prediction, official, current, legacy):
    assert videomme_official(prediction) == official
    assert extract_mcq_answer(prediction) == current
    assert videomme_lmms_eval_legacy(prediction) == legacy


def videomme_sample(qid: str, answer: str, duration: str, task: str) -> Sample:
    return Sample(
        id=qid,
        question="Which decoration is most numerous?",
        answers=[answer],
        meta={"options": dict(zip("ABCD", ("Apples.", "Candles.", "Berries.", "Same."))), "duration": duration,
              "task_type": task, "domain": "Knowledge", "sub_category": "Humanity & History"},
    )  # fmt: skip


def test_videomme_official_leaves_unparsed_out_lmms_eval_counts_them():
    items = [
        (videomme_sample("001-1", "C", "short", "Counting Problem"), "C"),  # right
        (videomme_sample("001-2", "A", "short", "Counting Problem"), "Best answer: A"),  # official reads B
        (videomme_sample("001-3", "D", "short", "OCR Problems"), "no idea"),  # unparsed
        (videomme_sample("301-1", "B", "medium", "OCR Problems"), "(B)"),  # right
        (videomme_sample("601-1", "A", "long", "Counting Problem"), "D"),  # wrong
    ]
    bench = get_benchmark("videomme")
    official = bench.aggregate([bench.score(s, p, "official") for s, p in items], "official")
    assert official["counted"] == 4 and official["unparsed"] == 1 and official["n"] == 5
    assert official["accuracy"] == pytest.approx(50.0)  # 2 of 4 counted
    assert official["short"] == pytest.approx(50.0)  # 1 of 2 counted; the unparsed one left out
    assert official["by_duration"]["short"] == 50.0
    assert official["counted_by_duration"] == {"short": 2, "medium": 1, "long": 1}
    assert official["medium"] == 100.0 and official["long"] == 0.0
    assert official["by_task_type"]["OCR Problems"] == 100.0  # 1 of 1 counted
    assert list(official["by_task_type"]) == ["OCR Problems", "Counting Problem"]  # the reference's order
    lmms = bench.aggregate([bench.score(s, p, "lmms_eval") for s, p in items], "lmms_eval")
    assert lmms["counted"] == 5
    assert lmms["accuracy"] == pytest.approx(60.0)  # 001-2 read as A; the unparsed one counts as wrong
    assert lmms["by_task_type"]["OCR Problems"] == 50.0
    assert lmms["counted_by_duration"] == {"short": 3, "medium": 1, "long": 1}
    legacy = get_benchmark("videomme")
    legacy.lmms_eval_rule = "legacy"
    assert legacy.score(items[0][0], "Answer: C", "lmms_eval")["parsed"] == "A"  # the A of "Answer"
    assert bench.score(items[0][0], "Answer: C", "lmms_eval")["parsed"] == "C"


def test_videomme_rejects_other_protocols_and_rules():
    bench = get_benchmark("videomme")
    with pytest.raises(ConfigError, match="official, lmms_eval"):
        bench.score(videomme_sample("1", "A", "short", "OCR Problems"), "A", "llava")
    from mmaccel.eval.benchmarks.videomme import VideoMME

    with pytest.raises(ConfigError, match="lmms_eval_rule"):
        VideoMME(lmms_eval_rule="2024")


VIDEOMME_ROWS = [
    ("001", "short", "fFjv93ACGo8", "001-1", "Counting Problem", "C"),
    ("001", "short", "fFjv93ACGo8", "001-2", "OCR Problems", "A"),
    ("301", "medium", "xYz_123-abc", "301-1", "Temporal Reasoning", "B"),
    ("601", "long", "LongVideo01", "601-1", "Information Synopsis", "D"),
]
OPTIONS = ["A. Apples.", "B. Candles.", "C. Berries.", "D. Same."]


def videomme_lmms_lab(root: Path) -> Path:
    rows = [
        {"video_id": vid, "duration": dur, "domain": "Knowledge", "sub_category": "Humanity & History",
         "url": f"https://www.youtube.com/watch?v={key}", "videoID": key, "question_id": qid, "task_type": task,
         "question": f"Question {qid}?", "options": OPTIONS, "answer": answer}
        for vid, dur, key, qid, task, answer in VIDEOMME_ROWS
    ]  # fmt: skip
    write_parquet(root / "videomme" / "test-00000-of-00001.parquet", rows)
    return root


def videomme_official_json(root: Path) -> Path:
    videos: dict[str, dict] = {}
    for vid, dur, key, qid, task, answer in VIDEOMME_ROWS:
        entry = videos.setdefault(vid, {"video_id": vid, "duration": dur, "domain": "Knowledge",
                                        "sub_category": "Humanity & History",
                                        "url": f"https://www.youtube.com/watch?v={key}", "questions": []})  # fmt: skip
        entry["questions"].append({"question_id": qid, "task_type": task, "question": f"Question {qid}?",
                                   "options": OPTIONS, "answer": answer})  # fmt: skip
    write_json(root / "videomme.json", list(videos.values()))
    return root


SRT = """1
00:00:00,000 --> 00:00:02,500
<font color="white" size=".72c">Germany decorates the tree</font>

2
00:00:05,000 --> 00:00:07,000
<font color="white" size=".72c">with apples and candles</font>
"""


@pytest.mark.parametrize(("build", "layout"), [(videomme_lmms_lab, "lmms_lab"), (videomme_official_json, "official")])
def test_videomme_loaders(build, layout, tmp_path):
    root = build(tmp_path / "videomme")
    (root / "data").mkdir()
    (root / "data" / "fFjv93ACGo8.mp4").write_bytes(b"")
    (root / "subtitle").mkdir()
    (root / "subtitle" / "fFjv93ACGo8.srt").write_text(SRT)
    bench = get_benchmark("videomme")
    samples = bench.load(root)
    info = bench.dataset_info()
    assert info["layout"] == layout
    assert info["per_duration"] == {"short": 2, "medium": 1, "long": 1}
    assert info["with_subtitles"] == 2
    first = samples[0]
    assert first.id == "001-1" and first.answers == ["C"]
    assert first.meta["options"]["C"] == "Berries."
    assert first.meta["video"] == str(root / "data" / "fFjv93ACGo8.mp4")
    assert Path(samples[2].meta["video"]).name == "xYz_123-abc.mp4"  # expected path, not there yet
    assert [s.id for s in bench.load(root, split="medium,long")] == ["301-1", "601-1"]
    with pytest.raises(ConfigError, match="short, medium, long"):
        bench.load(root, split="tiny")


def test_videomme_prompts_with_and_without_subtitles(tmp_path):
    root = videomme_lmms_lab(tmp_path / "v")
    (root / "subtitle").mkdir()
    (root / "subtitle" / "fFjv93ACGo8.srt").write_text(SRT)
    plain = get_benchmark("videomme")
    sample = plain.load(root, images=False)[0]
    assert plain.prompt(sample) == (
        "Select the best answer to the following multiple-choice question based on the video. Respond with only "
        "the letter (A, B, C, or D) of the correct option.\nQuestion 001-1?\nA. Apples.\nB. Candles.\n"
        "C. Berries.\nD. Same.\nThe best answer is:"
    )
    subs = get_benchmark("videomme_w_subtitle")
    sample = subs.load(root, images=False)[0]
    text = subs.prompt(sample, "lmms_eval")
    assert text.startswith(
        "This video's subtitles are listed below:\nGermany decorates the tree\nwith apples and candles\n"
        "Select the best answer to the following multiple-choice question based on the video and the subtitles."
    )
    sample.meta["frame_times"] = [1.0, 3.0]  # only the first cue is on screen at a sampled frame
    assert "apples" not in subs.prompt(sample, "official")
    third = subs.load(root, images=False)[2]
    assert "listed below:\nNo subtitles available\nSelect" in subs.prompt(third)


def test_srt_reading(tmp_path):
    path = tmp_path / "a.srt"
    path.write_text(SRT)
    assert read_srt(path) == [(0.0, 2.5, "Germany decorates the tree"), (5.0, 7.0, "with apples and candles")]
    assert subtitle_text(path, [6.0]) == "with apples and candles"
    with pytest.raises(DataError, match=r"b\.srt: subtitle file not found"):
        read_srt(tmp_path / "b.srt")


def test_score_videomme_through_the_cli_and_the_library(tmp_path):
    root = videomme_lmms_lab(tmp_path / "v")
    predictions = mmaccel_predictions(
        tmp_path / "p.jsonl", [("001-1", "C"), ("001-2", "Answer: A"), ("301-1", "unsure"), ("601-1", "D")]
    )
    out = tmp_path / "m.json"
    argv = ["score", "--benchmark", "videomme", "--data", str(root), "--predictions", str(predictions)]
    assert main([*argv, "--protocol", "lmms_eval", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["metrics"]["accuracy"] == 75.0  # all four counted, "unsure" wrong
    assert result["reference"].startswith("EvolvingLMMs-Lab/lmms-eval")
    official = score_predictions("videomme", root, predictions, protocol="official")
    assert official["metrics"]["accuracy"] == 100.0  # "Answer: A" reads A (right), "unsure" left out
    assert official["metrics"]["unparsed"] == 1
    default = tmp_path / "default.json"
    assert main([*argv, "--out", str(default)]) == 0  # video benchmarks score with the official rules by default
    assert json.loads(default.read_text())["metrics"] == official["metrics"]


# --------------------------------------------------------------------------------------------------- MVBench

# prediction as stored -> check_ans against "(A) a man" (official); lmms-eval mcq_acc (letter read, correct)
MVBENCH_VECTORS = [
    ("(A) a man", True, "A", True),
    ("A) a man", True, "A", True),
    ("A", True, "A", True),
    ("A.", True, "A", True),
    ("a", True, "A", True),
    ("(A)a man", True, "A", True),
    ("(", True, "", False),  # an empty generation after the reference's "Best option:("
    (" B", True, "B", False),  # leading space: the first word is empty, a substring of anything
    ("A man is walking", True, "A", True),
    ("(B) a dog", False, "B", False),
    ("B. a dog", False, "B", False),
    ("C", False, "C", False),
    ("Option A", False, "A", True),
    ("Answer: (A)", False, "A", True),
    ("The answer is A", False, "A", True),
]


@pytest.mark.parametrize(("prediction", "official", "lmms_letter", "lmms_correct"), MVBENCH_VECTORS)
def test_mvbench_vectors(prediction, official, lmms_letter, lmms_correct):
    assert mvbench_check_ans(prediction, "(A) a man") is official
    assert mvbench_lmms_eval_correct(prediction, "A") == (lmms_letter, lmms_correct)


def mvbench_data(root: Path) -> Path:
    write_json(root / "json" / "action_sequence.json", [
        {"video": "A1.mp4", "question": "What happened after the person held the box?",
         "candidates": ["Put down the box.", "Took the cup.", "Opened the door.", "Sat down."],
         "answer": "Took the cup.", "start": 1.5, "end": 9.0},
        {"video": "A2.mp4", "question": "What did the person do first?",
         "candidates": ["Sat down.", "Stood up.", "Ran."], "answer": "Sat down.", "start": 0, "end": 4},
    ])  # fmt: skip
    write_json(root / "json" / "episodic_reasoning.json", [
        {"video": "castle_s01e01_seg02_clip_00", "question": "Why is Castle there?",
         "candidates": ["To help", "To write", "To leave", "To eat", "To sleep"], "answer": "To write",
         "start": 3.0, "end": 20.0},
    ])  # fmt: skip
    return root


def test_mvbench_loader_and_prompts(tmp_path):
    root = mvbench_data(tmp_path / "MVBench")
    bench = get_benchmark("mvbench")
    samples = bench.load(root)
    info = bench.dataset_info()
    assert info["per_task"] == {"Action Sequence": 2, "Episodic Reasoning": 1}
    assert len(info["absent_tasks"]) == 18
    first, _, episodic = samples
    assert first.id == "action_sequence/0" and first.answers == ["B"]
    assert first.meta["bound"] == (1.5, 9.0)
    assert first.meta["video"] == str(root / "video" / "star" / "Charades_v1_480" / "A1.mp4")
    assert episodic.meta["folder_fps"] == 3.0 and episodic.answers == ["B"]
    assert bench.prompt(first).endswith(
        "select the best option that accurately addresses the question.\nQuestion: What happened after the person "
        "held the box?\nOptions:\n(A) Put down the box.\n(B) Took the cup.\n(C) Opened the door.\n(D) Sat down.\n"
        "Only give the best option."
    )
    assert bench.answer_prefix() == "Best option:(" and bench.answer_prefix("lmms_eval") == ""
    assert bench.prompt(first, "lmms_eval") == (
        "Question: What happened after the person held the box?\nOption:\nA. Put down the box.\nB. Took the cup.\n"
        "C. Opened the door.\nD. Sat down.\nAnswer with the option's letter from the given choices directly."
    )
    assert [s.id for s in bench.load(root, split="Episodic Reasoning")] == ["episodic_reasoning/0"]
    with pytest.raises(DataError, match="object_shuffle"):
        bench.load(root, split="object_shuffle")
    with pytest.raises(ConfigError, match="not an MVBench task"):
        bench.load(root, split="dancing")


def test_mvbench_loader_rejects_an_answer_outside_the_candidates(tmp_path):
    write_json(tmp_path / "json" / "action_count.json",
               [{"video": "x.mp4", "question": "How many?", "candidates": ["1", "2"], "answer": "3"}])  # fmt: skip
    with pytest.raises(DataError, match=r"action_count\.json item 0: answer '3' is not among the candidates"):
        get_benchmark("mvbench").load(tmp_path)


def test_mvbench_average_is_the_mean_of_task_accuracies(tmp_path):
    root = mvbench_data(tmp_path / "MVBench")
    predictions = mmaccel_predictions(
        tmp_path / "p.jsonl",
        [("action_sequence/0", "(B) Took the cup."), ("action_sequence/1", "B"), ("episodic_reasoning/0", "B)")],
    )
    result = score_predictions("mvbench", root, predictions, protocol="official")["metrics"]
    assert result["by_task"] == {"Action Sequence": 50.0, "Episodic Reasoning": 100.0}
    assert result["n_by_task"] == {"Action Sequence": 2, "Episodic Reasoning": 1}
    assert result["average"] == 75.0  # mean of 50 and 100
    assert result["overall"] == pytest.approx(200 / 3)  # 2 of 3 questions
    assert result["tasks"] == 2


# --------------------------------------------------------------------------------------------------- NExT-QA

NEXTQA_OPTIONS = {"A": "the boy falls", "B": "to pick up the ball", "C": "he is tired", "D": "to dance",
                  "E": "because of rain"}  # fmt: skip
# prediction -> official (leading letter), lmms-eval (parse_multi_choice_response; None = its random guess)
NEXTQA_VECTORS = [
    ("B", "B", "B"),
    ("B.", "B", "B"),
    ("(B)", "B", "B"),
    ("B) to pick up the ball", "B", "B"),
    ("Answer: B.", None, "B"),
    ("The answer is B", None, "B"),
    ("B because", None, "B"),
    ("He bends down to pick up the ball from the floor", None, "B"),  # > 5 words: option text
    ("to pick up the ball", None, None),  # 5 words: no text match
    ("A or B", None, "B"),  # several: the last one
    ("(A) or (B)", "A", "B"),
    ("C, D", "C", "D"),
    ("A boy", None, "A"),
    ("b", None, None),
    ("I am not sure", None, None),
]


@pytest.mark.parametrize(("prediction", "official", "lmms_eval"), NEXTQA_VECTORS)
def test_nextqa_vectors(prediction, official, lmms_eval):
    assert leading_letter(prediction, "ABCDE") == official
    assert parse_multi_choice_response(prediction, list("ABCDE"), NEXTQA_OPTIONS) == lmms_eval


NEXTQA_ROWS = [  # video, qid, type, answer index
    (4010069381, 0, "CW", 1),
    (4010069381, 1, "CH", 0),
    (4010069381, 2, "TN", 2),
    (4882821564, 3, "TP", 3),
    (4882821564, 4, "TC", 4),
    (4882821564, 5, "DC", 0),
    (4882821564, 6, "DL", 1),
    (4882821564, 7, "DO", 2),
]


def nextqa_rows() -> list[dict]:
    return [
        {"video": video, "frame_count": 100, "width": 640, "height": 480, "question": f"question {qid}",
         "answer": answer, "qid": qid, "type": qtype, **{f"a{i}": f"option {i}" for i in range(5)}}
        for video, qid, qtype, answer in NEXTQA_ROWS
    ]  # fmt: skip


def nextqa_official(root: Path) -> Path:
    root.mkdir(parents=True)
    rows = nextqa_rows()
    with (root / "val.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    write_json(root / "map_vid_vidorID.json", {"4010069381": "1106/4010069381"})
    return root


def nextqa_lmms_lab(root: Path) -> Path:
    write_parquet(root / "MC" / "test-00000-of-00001.parquet", nextqa_rows())
    return root


@pytest.mark.parametrize(("build", "layout", "split"), [(nextqa_official, "official", "val"),
                                                        (nextqa_lmms_lab, "lmms_lab", "test")])  # fmt: skip
def test_nextqa_loaders(build, layout, split, tmp_path):
    root = build(tmp_path / "nextqa")
    bench = get_benchmark("nextqa")
    samples = bench.load(root, images=False)
    info = bench.dataset_info()
    assert (info["layout"], info["split"]) == (layout, split)
    assert info["per_type"] == {"CW": 1, "CH": 1, "TN": 2, "TC": 1, "DC": 1, "DL": 1, "DO": 1}
    first = samples[0]
    assert first.id == "4010069381_0" and first.answers == ["B"]
    assert first.meta["options"]["E"] == "option 4"
    expected = "NExTVideo/1106/4010069381.mp4" if layout == "official" else "NExTVideo/4010069381.mp4"
    assert first.meta["video"] == str(root / expected)
    assert samples[3].meta["type"] == "TP" and samples[3].meta["type_group"] == "TN"
    assert bench.prompt(first) == (
        "question 0\nA. option 0\nB. option 1\nC. option 2\nD. option 3\nE. option 4\n"
        "Answer with the option's letter from the given choices directly."
    )


def test_nextqa_accuracy_per_type_and_category(tmp_path):
    root = nextqa_official(tmp_path / "nextqa")
    answers = ["B", "A", "C", "D", "E", "A", "B", "C"]  # all right ...
    answers[1] = "B"  # ... but CH wrong
    answers[3] = "The answer is D"  # TP: right for lmms-eval only
    predictions = mmaccel_predictions(
        tmp_path / "p.jsonl", [(f"{v}_{q}", a) for (v, q, _, _), a in zip(NEXTQA_ROWS, answers)]
    )
    official = score_predictions("nextqa", root, predictions, protocol="official")["metrics"]
    assert official["accuracy"] == 75.0
    assert official["causal"] == 50.0 and official["descriptive"] == 100.0
    assert official["temporal"] == pytest.approx(200 / 3)  # TN and TC right, TP (counted as TN) unread
    assert official["by_type"]["TN"] == 50.0 and official["n_by_type"]["TN"] == 2
    assert list(official["by_type"]) == ["CW", "CH", "TN", "TC", "DC", "DL", "DO"]
    assert official["unparsed"] == 1
    lmms = score_predictions("nextqa", root, predictions, protocol="lmms_eval")["metrics"]
    assert lmms["accuracy"] == 87.5 and lmms["temporal"] == 100.0


def test_nextqa_missing_files_and_bad_types(tmp_path):
    with pytest.raises(DataError, match="matches neither NExT-QA layout"):
        get_benchmark("nextqa").load(tmp_path)
    root = nextqa_official(tmp_path / "bad")
    text = (root / "val.csv").read_text().replace(",CW,", ",XX,")
    (root / "val.csv").write_text(text)
    with pytest.raises(DataError, match=r"val\.csv:2: question type 'XX'"):
        get_benchmark("nextqa").load(root)
