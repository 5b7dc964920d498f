"""What the video multiple-choice benchmarks share: the base class, loading checks, accuracy tables, subtitles.

A video :class:`~mmaccel.eval.benchmarks.base.Sample` has ``image=None``; ``meta["video"]`` is the path of its
video file or frame folder (where the data says it is, whether or not it exists yet: decoding names a missing
file), ``meta["options"]`` maps each letter to its option text, and ``answers[0]`` is the correct letter.
Frames are read with :func:`mmaccel.eval.video.load_video`.
"""

from __future__ import annotations

import logging
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

from mmaccel.errors import DataError
from mmaccel.eval.benchmarks.base import Benchmark, Sample

__all__ = [
    "VIDEO_PROTOCOLS",
    "VideoBenchmark",
    "accuracy_table",
    "count_table",
    "first_existing",
    "percent",
    "read_srt",
    "subtitle_text",
]

log = logging.getLogger(__name__)
VIDEO_PROTOCOLS: tuple[str, ...] = ("official", "lmms_eval")


def percent(correct: float, count: int) -> float:
    """``100 * correct / count``; 0 when nothing is counted (the references divide by zero or print 0)."""
    return 100.0 * correct / count if count else 0.0


def _groups(rows: Iterable[dict[str, Any]], key: str, order: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[str(row[key])].append(row)
    order = list(order)
    names = [name for name in order if name in groups] + sorted(set(groups) - set(order))
    return {name: groups[name] for name in names}


def accuracy_table(rows: Iterable[dict[str, Any]], key: str, order: Iterable[str] = ()) -> dict[str, float]:
    """Accuracy per value of ``row[key]``, in percent over the rows of the group with ``counted`` set.

    Groups named in ``order`` come first, in that order; the others follow sorted.
    """
    table = {}
    for name, members in _groups(rows, key, order).items():
        counted = [r for r in members if r["counted"]]
        table[name] = percent(sum(r["correct"] for r in counted), len(counted))
    return table


def count_table(rows: Iterable[dict[str, Any]], key: str, order: Iterable[str] = ()) -> dict[str, int]:
    """Number of rows with ``counted`` set per value of ``row[key]`` (the denominators of :func:`accuracy_table`)."""
    return {name: sum(1 for r in members if r["counted"]) for name, members in _groups(rows, key, order).items()}


def first_existing(candidates: list[Path]) -> Path:
    """The first candidate path that exists, else the first one (a later decode names it as missing)."""
    for path in candidates:
        if path.exists():
            return path
    return candidates[0]


class VideoBenchmark(Benchmark):
    """Base of the video multiple-choice benchmarks: protocols ``official`` (default) and ``lmms_eval``.

    Subclasses implement :meth:`read` (``(samples, info)`` from a data folder, detecting its layout) besides
    the prompt, score and aggregate methods.
    """

    protocols: ClassVar[tuple[str, ...]] = VIDEO_PROTOCOLS
    default_protocol: ClassVar[str] = "official"
    modality: ClassVar[str] = "video"

    def read(self, root: Path, split: str | None, videos: bool) -> tuple[list[Sample], dict[str, Any]]:
        raise NotImplementedError

    def load(self, data_dir: str | Path, split: str | None = None, limit: int | None = None, *, images: bool = True):
        """Read the benchmark from ``data_dir``; ``images=False`` skips checking for the video files."""
        root = Path(data_dir)
        if not root.is_dir():
            raise DataError(f"--data {root}: no such directory")
        if limit is not None and limit < 1:
            raise DataError(f"limit={limit}: must be a positive number of samples")
        samples, info = self.read(root, split, images)
        if not samples:
            raise DataError(f"{root}: no {self.name} questions found (layout {info.get('layout')}, split {split})")
        duplicates = [key for key, count in Counter(s.id for s in samples).items() if count > 1]
        if duplicates:
            raise DataError(f"{root}: {len(duplicates)} duplicate question ids, e.g. {duplicates[:5]}")
        if images:
            absent = [s.meta["video"] for s in samples if not Path(s.meta["video"]).exists()]
            if absent:
                log.warning("%s: %d of %d videos are not there yet, e.g. %s", root, len(absent), len(samples),
                            absent[0])  # fmt: skip
        info = {"benchmark": self.name, "path": str(root), **info, "size": len(samples)}
        if limit is not None:
            samples = samples[:limit]
            info["limit"] = limit
        info["loaded"] = len(samples)
        log.info("loaded %d %s samples from %s (%s layout)", len(samples), self.name, root, info.get("layout"))
        self._info = info
        return samples


# ------------------------------------------------------------------------------------------------------ subtitles

_SRT_TIME = re.compile(r"(\d+):(\d+):(\d+)[,.](\d+)\s*-->\s*(\d+):(\d+):(\d+)[,.](\d+)")
_TAG = re.compile(r"<[^>]+>")


def _seconds(h: str, m: str, s: str, ms: str) -> float:
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 10 ** len(ms)


def read_srt(path: str | Path) -> list[tuple[float, float, str]]:
    """``(start, end, text)`` per cue of an ``.srt`` file, seconds, markup such as ``<font ...>`` removed."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: subtitle file not found")
    cues = []
    for block in re.split(r"\r?\n\s*\r?\n", path.read_text(encoding="utf-8-sig", errors="replace")):
        lines = [line.strip() for line in block.strip().splitlines()]
        timing = next((i for i, line in enumerate(lines) if _SRT_TIME.search(line)), None)
        if timing is None:
            continue
        g = _SRT_TIME.search(lines[timing]).groups()
        text = " ".join(_TAG.sub("", line) for line in lines[timing + 1 :]).strip()
        if text:
            cues.append((_seconds(*g[:4]), _seconds(*g[4:]), text))
    return cues


def subtitle_text(path: str | Path, times: Iterable[float] | None = None) -> str:
    """The subtitle lines, one per cue, joined by newlines.

    With ``times`` (seconds of the sampled frames) only the cues shown at one of those times are kept
    (``start <= t < end``), as lmms-eval selects them per sampled frame; without, every cue.
    """
    cues = read_srt(path)
    if times is not None:
        moments = sorted(times)
        cues = [cue for cue in cues if any(cue[0] <= t < cue[1] for t in moments)]
    return "\n".join(text for _, _, text in cues)
