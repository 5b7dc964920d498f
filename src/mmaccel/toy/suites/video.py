"""The video suites: clips of the video world in the layouts of Video-MME, MVBench and NExT-QA.

Item ``i`` of a suite is one clip with one question, drawn by :func:`mmaccel.toy.video.ask` from
``item_rng(suite_number, i)``; its question type is ``VIDEO_QUESTION_TYPES[i % 6]`` and, for
``shapes-videomme``, its duration ``DURATIONS[(i // 6) % 3]`` (8 / 32 / 128 frames), so every prefix of 18 items
is balanced over both. ``shapes-mvbench`` and ``shapes-nextqa`` use medium clips (32 frames). Each clip is
written once, as an H.264 mp4 of 112 x 112 pixels at :data:`FPS` frames per second, where the benchmark's loader
looks for it.

Options: the world's questions have four options (three for ``when``). Video-MME needs four and NExT-QA five,
so :func:`widen` adds distractors that are wrong by construction (another shape, count, colour or string; "it
did not move"; "throughout the video", "never"); MVBench takes the world's options as its candidates.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from mmaccel.errors import DataError
from mmaccel.toy.font import CHARACTERS
from mmaccel.toy.suites.common import item_rng, write_json
from mmaccel.toy.video import CLIP_LENGTHS, LETTERS, VIDEO_QUESTION_TYPES, Clip, Question, ask, render_clip
from mmaccel.toy.world import COLOR_NAMES, SHAPES

__all__ = [
    "FPS",
    "MVBENCH_TASKS",
    "NEXTQA_TYPES",
    "VIDEOMME_TASK_TYPES",
    "widen",
    "write_mp4",
    "write_mvbench",
    "write_nextqa",
    "write_videomme",
]

FPS = 8
DURATIONS = tuple(CLIP_LENGTHS)  # short, medium, long
MEDIUM = "medium"
VIDEOMME_TASK_TYPES = {
    "order": "Temporal Reasoning", "count": "Counting Problem", "change": "Attribute Perception",
    "motion": "Action Recognition", "when": "Temporal Perception", "needle": "OCR Problems",
}  # fmt: skip
MVBENCH_TASKS = {
    "order": "Action Sequence", "count": "Action Count", "change": "State Change", "motion": "Moving Direction",
    "when": "Action Localization", "needle": "Character Order",
}  # fmt: skip
NEXTQA_TYPES = {"order": "TN", "count": "DC", "change": "CH", "motion": "DL", "when": "TC", "needle": "DO"}
_EXTRA = {
    "order": [f"{c} {s}" for c in COLOR_NAMES for s in SHAPES],
    "count": ["0", "1", "2", "3", "4", "5"],
    "change": list(COLOR_NAMES),
    "motion": ["it did not move"],
    "when": ["throughout the video", "never"],
}


def kind_of(index: int) -> str:
    """The question type of item ``index``."""
    return VIDEO_QUESTION_TYPES[index % len(VIDEO_QUESTION_TYPES)]


def widen(question: Question, count: int, rng: np.random.Generator) -> Question:
    """``question`` with distractors added at random places until it has ``count`` options."""
    options = list(question.options)
    if question.kind == "needle":
        length = len(question.answer)
        pool = ["".join(CHARACTERS[int(i)] for i in rng.integers(0, len(CHARACTERS), size=length)) for _ in range(8)]
    else:
        pool = _EXTRA[question.kind]
    pool = [p for p in dict.fromkeys(pool) if p not in options]
    for choice in rng.permutation(len(pool))[: max(count - len(options), 0)]:
        options.insert(int(rng.integers(0, len(options) + 1)), pool[int(choice)])
    if len(options) != count:
        raise RuntimeError(f"could not widen a {question.kind} question to {count} options")
    return Question(question.kind, question.text, question.answer, tuple(options), question.evidence)


def write_mp4(path: Path, frames: np.ndarray, fps: int = FPS) -> None:
    """Frames ``[F, H, W, 3]`` uint8 as an H.264 mp4: 4:2:0, constant quality 20, the ``ultrafast`` preset
    (four times faster than the default at 112 x 112) and one thread, so the bytes do not depend on the
    machine's core count."""
    try:
        import av
    except ImportError as error:
        raise DataError("writing the video suites needs PyAV: pip install 'mmaccel[video]'") from error
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream(
            "libx264", rate=fps, options={"crf": "20", "preset": "ultrafast", "threads": "1"}
        )
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        for pixels in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")))
        container.mux(stream.encode())
    path.write_bytes(buffer.getvalue())


def _item(number: int, index: int, length: str) -> tuple[Clip, Question, np.random.Generator]:
    rng = item_rng(number, index)
    clip, question = ask(kind_of(index), length, rng)
    return clip, question, rng


def write_videomme(root: Path, number: int, size: int) -> dict[str, Any]:
    """Video-MME's official JSON (``videomme.json``, a list of videos with their ``questions``) and
    ``data/<videoID>.mp4``; one question per video, durations short / medium / long in turn."""
    videos = []
    for index in range(size):
        duration = DURATIONS[(index // len(VIDEO_QUESTION_TYPES)) % len(DURATIONS)]
        clip, question, rng = _item(number, index, duration)
        question = widen(question, 4, rng)
        video_id, key = f"{index + 1:04d}", f"shapes{index:05d}"
        write_mp4(root / "data" / f"{key}.mp4", render_clip(clip))
        videos.append({
            "video_id": video_id, "duration": duration, "domain": "Shapes world", "sub_category": question.kind,
            "url": f"https://www.youtube.com/watch?v={key}", "videoID": key,
            "questions": [{
                "question_id": f"{video_id}-1", "task_type": VIDEOMME_TASK_TYPES[question.kind],
                "question": question.text, "answer": question.answer_letter,
                "options": [f"{LETTERS[i]}. {text}" for i, text in enumerate(question.options)],
            }],
        })  # fmt: skip
    write_json(root / "videomme.json", videos)
    return {"questions": size, "videos": size}


def write_mvbench(root: Path, number: int, size: int) -> dict[str, Any]:
    """MVBench's ``json/<task>.json`` (``video``, ``question``, ``candidates``, ``answer``) and each task's
    video folder under ``video/``; six tasks, one per question type, medium clips."""
    from mmaccel.eval.benchmarks.mvbench import TASKS

    tasks: dict[str, list[dict[str, Any]]] = {}
    for index in range(size):
        clip, question, _ = _item(number, index, MEDIUM)
        stem, folder, _bounded, _fps = TASKS[MVBENCH_TASKS[question.kind]]
        name = f"shapes{index:05d}.mp4"
        write_mp4(root / "video" / folder / name, render_clip(clip))
        tasks.setdefault(stem, []).append(
            {"video": name, "question": question.text, "candidates": list(question.options), "answer": question.answer}
        )
    for stem, items in tasks.items():
        write_json(root / "json" / f"{stem}.json", items)
    return {"questions": size, "videos": size, "tasks": len(tasks)}


NEXTQA_COLUMNS = ("video", "frame_count", "width", "height", "question", "answer", "qid", "type",
                  "a0", "a1", "a2", "a3", "a4")  # fmt: skip


def write_nextqa(root: Path, number: int, size: int) -> dict[str, Any]:
    """NExT-QA's official ``val.csv`` (five options ``a0``-``a4``, ``answer`` their index) and
    ``NExTVideo/<video>.mp4``; medium clips."""
    rows = []
    for index in range(size):
        clip, question, rng = _item(number, index, MEDIUM)
        question = widen(question, 5, rng)
        video = str(1_000_000_000 + index)
        write_mp4(root / "NExTVideo" / f"{video}.mp4", render_clip(clip))
        rows.append({
            "video": video, "frame_count": clip.n_frames, "width": 112, "height": 112, "question": question.text,
            "answer": question.options.index(question.answer), "qid": 0, "type": NEXTQA_TYPES[question.kind],
            **{f"a{i}": text for i, text in enumerate(question.options)},
        })  # fmt: skip
    with (root / "val.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=NEXTQA_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return {"questions": size, "videos": size}
