"""The synthetic suites: name -> benchmark, seed stream, full size and standard-error bound.

Seven image suites (:data:`SUITES`, what ``mmaccel eval`` and ``mmaccel toy bench`` run by default) and three
video suites (:data:`VIDEO_SUITES`, written on demand by :func:`write_suite` for the video scorers).

Sizes are chosen so that one standard error of the headline metric is at most 2 points (on a 0-100 scale) for
*any* model, from the sampling structure alone:

* accuracy-like headlines (ScienceQA-IMG, GQA, MMBench's circular accuracy over questions, and the VQA accuracy
  of TextVQA and VQAv2, whose per-question scores lie in [0, 1]) have per-question variance at most 1/4, so
  ``SE <= 50 / sqrt(n)``: 640 questions give 1.98;
* MME's subtask score is ``acc + acc+ = mean over images of 50 (c1 + c2) + 100 c1 c2`` (c = question right),
  an image mean of values in {0, 50, 200} with standard deviation at most 100; the perception sum over
  ``K`` subtasks of ``m`` images has ``SE <= 100 sqrt(K / m)`` points of its ``200 K`` maximum, i.e.
  ``50 / sqrt(K m)`` on a 0-100 scale: 5 x 128 images give 19.8 of 1000 points, 1.98 %;
* POPE's headline is the mean F1 of three splits that share their ``P`` positive questions. By the delta method
  its variance is at most ``0.3098 / P`` (the worst case, recall 0.22 with no false positives, maximised over
  recall and the three false-positive rates), so ``SE <= 55.7 / sqrt(P)``: 260 images (P = 780) give 1.99.

The video suites hold one question per clip and aim at 3 points: ``shapes-videomme`` and ``shapes-nextqa`` have
accuracy headlines, ``50 / sqrt(n)`` (288 questions give 2.95; Video-MME's official protocol leaves unparsed
answers out, so ``n`` is then the parsed ones); MVBench's headline is the mean of ``K`` task accuracies with
``m_k`` questions each, ``SE <= sqrt(sum_k 2500 / m_k) / K``, i.e. ``50 / sqrt(K m)`` for equal tasks: 6 x 48
give 2.95.

Each bound treats questions as independent; ``mmaccel toy bench`` also reports the bootstrap standard error over
images (or questions) of the actual predictions.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmaccel.errors import ConfigError
from mmaccel.toy.suites.choice import write_mmbench, write_sqa
from mmaccel.toy.suites.common import SUITE_SEED
from mmaccel.toy.suites.open_ended import write_gqa, write_textvqa, write_vqav2
from mmaccel.toy.suites.video import MVBENCH_TASKS, write_mvbench, write_nextqa, write_videomme
from mmaccel.toy.suites.yesno import MME_SUBTASKS, write_mme, write_pope

__all__ = ["MANIFEST", "SUITES", "VIDEO_SUITES", "Suite", "get_suite", "list_suites", "read_manifest", "write_suite"]

log = logging.getLogger(__name__)
MANIFEST = "shapes_suite.json"
POPE_WORST_VARIANCE = 0.3098  # max over recall and false-positive rates of P * Var(mean F1), delta method


def _accuracy_bound(questions: int) -> float:
    return 50 / math.sqrt(questions)


def _task_mean_bound(questions: int) -> float:
    """Worst-case SE of the mean over tasks of per-task accuracy, item ``i`` in task ``i % K``."""
    tasks = len(MVBENCH_TASKS)
    sizes = [len(range(task, questions, tasks)) for task in range(tasks)]
    present = [size for size in sizes if size]
    return math.sqrt(sum(2500 / size for size in present)) / len(present)


def _mme_bound(per_subtask: int) -> float:
    return 50 / math.sqrt(len(MME_SUBTASKS) * per_subtask)


def _pope_bound(images: int) -> float:
    return 100 * math.sqrt(POPE_WORST_VARIANCE / (3 * images))


@dataclass(frozen=True)
class Suite:
    """A synthetic suite: ``write(root, number, size)`` writes it in the layout ``benchmark``'s loader reads.

    ``size`` counts ``unit``; ``se_bound(size)`` is the worst-case standard error of the headline metric on a
    0-100 scale (see the module docstring); ``scale`` converts it to the headline's own units (MME's
    perception sums five subtask scores of 0-200 points each, so its scale is 10).
    """

    name: str
    benchmark: str
    number: int
    size: int
    unit: str
    write: Callable[[Path, int, int], dict[str, Any]]
    se_bound: Callable[[int], float]
    scale: float = 1.0

    def headline_se_bound(self, size: int | None = None) -> float:
        """:attr:`se_bound` in the headline's own units, at ``size`` (default: the full size)."""
        return self.scale * self.se_bound(self.size if size is None else size)

    def prepare(self, root: str | Path, size: int | None = None) -> Path:
        """``root`` holding this suite at ``size``: reused when its manifest matches, written otherwise."""
        root = Path(root)
        manifest = read_manifest(root) if root.is_dir() else None
        wanted = self.size if size is None else size
        if manifest is None or (manifest.get("suite"), manifest.get("size")) != (self.name, wanted):
            write_suite(self.name, root, size)
        return root


SUITES: dict[str, Suite] = {
    suite.name: suite
    for suite in (
        Suite("shapes-mme", "mme", 1, 128, "images per subtask", write_mme, _mme_bound, 2.0 * len(MME_SUBTASKS)),
        Suite("shapes-pope", "pope", 2, 260, "images", write_pope, _pope_bound),
        Suite("shapes-mmbench", "mmbench", 3, 640, "questions", write_mmbench, _accuracy_bound),
        Suite("shapes-sqa", "scienceqa_img", 4, 640, "questions with an image", write_sqa, _accuracy_bound),
        Suite("shapes-textvqa", "textvqa", 5, 640, "questions", write_textvqa, _accuracy_bound),
        Suite("shapes-gqa", "gqa", 6, 640, "questions", write_gqa, _accuracy_bound),
        Suite("shapes-vqav2", "vqav2", 7, 640, "questions", write_vqav2, _accuracy_bound),
    )
}

VIDEO_SUITES: dict[str, Suite] = {
    suite.name: suite
    for suite in (
        Suite("shapes-videomme", "videomme", 8, 288, "questions (one clip each)", write_videomme, _accuracy_bound),
        Suite("shapes-mvbench", "mvbench", 9, 288, "questions (one clip each)", write_mvbench, _task_mean_bound),
        Suite("shapes-nextqa", "nextqa", 10, 288, "questions (one clip each)", write_nextqa, _accuracy_bound),
    )
}


def list_suites(video: bool = False) -> list[str]:
    """Image suite names in their canonical order, then (``video``) the video suites."""
    return [*SUITES, *(VIDEO_SUITES if video else ())]


def get_suite(name: str) -> Suite:
    """The suite called ``name`` (image or video); :class:`ConfigError` naming the known suites otherwise."""
    known = {**SUITES, **VIDEO_SUITES}
    if name not in known:
        raise ConfigError(f"suite {name!r} is unknown; choose from {', '.join(known)}")
    return known[name]


def read_manifest(root: str | Path) -> dict[str, Any] | None:
    """The manifest a previous :func:`write_suite` left in ``root``, or ``None``."""
    path = Path(root) / MANIFEST
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def write_suite(name: str, root: str | Path, size: int | None = None) -> dict[str, Any]:
    """Generate suite ``name`` into ``root`` (the folder ``--data`` points at) and return its manifest.

    The same name and size always give the same bytes. ``size`` (default: the suite's full size, in its
    ``unit``) may be smaller for quick runs; the items are then the first ``size`` of the full suite. ``root``
    must be empty, missing, or hold an earlier copy of the same suite and size (overwritten).

    The suite is written into a sibling folder ``.<name>.partial`` and renamed to ``root`` when complete, so a
    kill in the middle leaves ``root`` as it was (missing, empty or the earlier copy) and only the partial
    folder, which the next write removes and starts again.
    """
    suite = get_suite(name)
    size = suite.size if size is None else size
    if not isinstance(size, int) or size < 1:
        raise ConfigError(f"size={size!r}: must be a positive number of {suite.unit}")
    root = Path(root)
    if root.exists() and (not root.is_dir() or (any(root.iterdir()) and read_manifest(root) is None)):
        raise ConfigError(f"{root}: not an empty folder or an earlier copy of a suite; choose another --out")
    previous = read_manifest(root) if root.is_dir() else None
    if previous is not None and (previous.get("suite"), previous.get("size")) != (name, size):
        raise ConfigError(
            f"{root} holds {previous.get('suite')} of size {previous.get('size')}; write {name} (size {size}) "
            "to another folder"
        )
    partial = partial_folder(root)
    if partial.exists():
        log.info("removing %s, left by an interrupted write", partial)
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    counts = suite.write(partial, suite.number, size)
    manifest = {
        "suite": name, "benchmark": suite.benchmark, "seed": [SUITE_SEED, suite.number], "size": size,
        "unit": suite.unit, "se_bound": round(suite.se_bound(size), 3), **counts,
    }  # fmt: skip
    (partial / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    if root.exists():  # empty, or the earlier copy of this suite and size
        shutil.rmtree(root)
    os.replace(partial, root)
    log.info("wrote %s (%d %s) to %s", name, size, suite.unit, root)
    return manifest


def partial_folder(root: str | Path) -> Path:
    """Where :func:`write_suite` writes the suite for ``root`` before renaming it: ``.<name>.partial`` beside it."""
    root = Path(root).absolute()
    return root.parent / f".{root.name}.partial"
