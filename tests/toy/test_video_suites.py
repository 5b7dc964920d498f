"""Video suites: written in Video-MME / MVBench / NExT-QA layouts, read by their loaders, scored by their scorers."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("av")

from mmaccel.eval.benchmarks import get_benchmark
from mmaccel.eval.benchmarks.mvbench import TASKS
from mmaccel.eval.benchmarks.score import score_predictions
from mmaccel.eval.benchmarks.videomme import TASK_TYPES
from mmaccel.eval.suites import list_suites as eval_suites
from mmaccel.eval.video import load_video
from mmaccel.toy.suites import VIDEO_SUITES, get_suite, list_suites, read_manifest, write_suite
from mmaccel.toy.suites.common import item_rng
from mmaccel.toy.suites.video import (
    MVBENCH_TASKS,
    NEXTQA_TYPES,
    VIDEOMME_TASK_TYPES,
    kind_of,
    widen,
)
from mmaccel.toy.video import VIDEO_QUESTION_TYPES, ask, render_clip

SMALL = 18  # 6 question types x 3 durations
NAMES = list(VIDEO_SUITES)
PROTOCOLS = ("official", "lmms_eval")


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("video_suites")
    for name in NAMES:
        write_suite(name, base / name, SMALL)
    return {name: base / name for name in NAMES}


def _samples(name: str, root: Path):
    return get_benchmark(get_suite(name).benchmark).load(root)


def _score(tmp_path: Path, name: str, root: Path, protocol: str, answer_of) -> dict:
    path = tmp_path / f"{name}-{protocol}.jsonl"
    rows = [{"id": s.id, "prediction": answer_of(s)} for s in _samples(name, root)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return score_predictions(get_suite(name).benchmark, root, path, protocol=protocol)


def _oracle(sample) -> str:
    letter = sample.answers[0]
    return f"({letter}) {sample.meta['options'][letter]}"


def test_the_loaders_read_every_question_with_its_video(written):
    for name in NAMES:
        samples = _samples(name, written[name])
        assert len(samples) == SMALL
        assert all(Path(s.meta["video"]).is_file() for s in samples)
        assert all(s.answers[0] in s.meta["options"] for s in samples)
        assert read_manifest(written[name])["suite"] == name
    videomme = _samples("shapes-videomme", written["shapes-videomme"])
    assert Counter(s.meta["duration"] for s in videomme) == {"short": 6, "medium": 6, "long": 6}
    assert Counter(s.meta["task_type"] for s in videomme) == {task: 3 for task in VIDEOMME_TASK_TYPES.values()}
    assert set(VIDEOMME_TASK_TYPES.values()) <= set(TASK_TYPES)
    assert all(len(s.meta["options"]) == 4 for s in videomme)
    mvbench = _samples("shapes-mvbench", written["shapes-mvbench"])
    assert Counter(s.meta["task"] for s in mvbench) == {task: 3 for task in MVBENCH_TASKS.values()}
    assert set(MVBENCH_TASKS.values()) <= set(TASKS)
    nextqa = _samples("shapes-nextqa", written["shapes-nextqa"])
    assert Counter(s.meta["type"] for s in nextqa) == {code: 3 for code in NEXTQA_TYPES.values()}
    assert all(list(s.meta["options"]) == list("ABCDE") for s in nextqa)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("name", NAMES)
def test_the_right_letters_score_100(tmp_path, written, name, protocol):
    metrics = _score(tmp_path, name, written[name], protocol, _oracle)["metrics"]
    assert metrics[metrics["headline"]] == pytest.approx(100.0)


@pytest.mark.parametrize("name", NAMES)
def test_a_constant_letter_scores_the_share_of_its_answers(tmp_path, written, name):
    samples = _samples(name, written[name])
    metrics = _score(tmp_path, name, written[name], "lmms_eval", lambda s: "A")["metrics"]
    if name == "shapes-mvbench":  # the mean over tasks of the share of A answers
        tasks = Counter(s.meta["task"] for s in samples)
        shares = [sum(s.answers[0] == "A" for s in samples if s.meta["task"] == t) / n for t, n in tasks.items()]
        expected = 100 * sum(shares) / len(shares)
    else:
        expected = 100 * sum(s.answers[0] == "A" for s in samples) / len(samples)
    assert metrics[metrics["headline"]] == pytest.approx(expected)
    assert 0 < expected < 50  # the answer letters are spread: a constant answer stays near chance
    assert len({s.answers[0] for s in samples}) >= 3


def test_widen_adds_wrong_options_and_keeps_the_answer():
    for index in range(12):
        rng = item_rng(99, index)
        _, question = ask(kind_of(index), "medium", rng)
        wide = widen(question, 5, rng)
        assert len(set(wide.options)) == 5 and wide.answer == question.answer
        assert set(question.options) < set(wide.options)
        assert wide.options[ord(wide.answer_letter) - ord("A")] == question.answer


def test_a_seed_reproduces_the_files_and_a_smaller_suite_is_a_prefix(tmp_path, written):
    for name in NAMES:
        small = tmp_path / name
        write_suite(name, small, 7)
        for path in small.rglob("*.mp4"):
            assert path.read_bytes() == (written[name] / path.relative_to(small)).read_bytes()
        assert len(list(small.rglob("*.mp4"))) == 7
        full = {s.id: s for s in _samples(name, written[name])}
        for a in _samples(name, small):
            b = full[a.id]
            assert (a.question, a.answers, a.meta["options"]) == (b.question, b.answers, b.meta["options"])


def test_items_are_numbered_by_their_video_files(written):
    for name in NAMES:
        stems = sorted(Path(s.meta["video"]).stem for s in _samples(name, written[name]))
        expected = [f"{1_000_000_000 + i}" if name == "shapes-nextqa" else f"shapes{i:05d}" for i in range(SMALL)]
        assert stems == expected


def _block_means(frames: np.ndarray, block: int = 14) -> np.ndarray:
    count, height, width, _ = frames.shape  # [F, H, W, 3]
    blocks = frames.reshape(count, height // block, block, width // block, block, 3).astype(np.float64)
    return blocks.mean(axis=(2, 4))  # [F, H / block, W / block, 3]


@pytest.mark.parametrize("name", NAMES)
def test_the_mp4_frames_decode_to_the_rendered_clip(written, name):
    number = get_suite(name).number
    for sample in _samples(name, written[name])[:7]:
        index = int(Path(sample.meta["video"]).stem.removeprefix("shapes")) % 1_000_000_000  # the item's number
        length = ("short", "medium", "long")[(index // 6) % 3] if name == "shapes-videomme" else "medium"
        clip, _ = ask(kind_of(index), length, item_rng(number, index))
        decoded = load_video(sample.meta["video"], frames=clip.n_frames)
        assert decoded.total == clip.n_frames and decoded.native_fps == pytest.approx(8.0)
        rendered = render_clip(clip)  # [F, 112, 112, 3]
        assert decoded.frames.shape == rendered.shape
        error = np.abs(_block_means(decoded.frames) - _block_means(rendered))
        assert error.mean() < 2.5 and error.max() < 12.0  # another clip: about 27 and 150


def test_full_sizes_bound_the_standard_error_by_3_points():
    for name in NAMES:
        suite = get_suite(name)
        assert suite.size == 288 and suite.se_bound(suite.size) <= 3.0
        assert suite.se_bound(suite.size - 18) > 3.0  # the size is the smallest balanced one that meets it
    mvbench = get_suite("shapes-mvbench")
    assert mvbench.se_bound(288) == pytest.approx(50 / np.sqrt(288))
    assert mvbench.se_bound(7) == pytest.approx(np.sqrt(2500 / 2 + 5 * 2500) / 6)  # one task has two


def test_video_suites_stay_out_of_the_default_runs():
    assert set(NAMES).isdisjoint(list_suites()) and set(NAMES) <= set(list_suites(video=True))
    assert set(NAMES).isdisjoint(eval_suites())
    assert len(VIDEO_QUESTION_TYPES) == 6


def test_toy_suites_command_writes_a_video_suite_on_request(tmp_path, capsys):
    from mmaccel.cli import main

    assert main(["toy", "suites", "--out", str(tmp_path), "--suite", "shapes-nextqa", "--size", "2"]) == 0
    assert "shapes-nextqa: 2 questions (one clip each)" in capsys.readouterr().out
    assert len(_samples("shapes-nextqa", tmp_path / "shapes-nextqa")) == 2
    with pytest.raises(SystemExit):  # not a suite the image model runs
        main(["toy", "bench", "--suite", "shapes-nextqa"])
    assert "invalid choice: 'shapes-nextqa'" in capsys.readouterr().err
