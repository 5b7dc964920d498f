"""Find a benchmark's local data, tell which layout it is in, and read it into :class:`Sample` lists.

Two layouts are read (exact file names in ``docs/benchmarks-protocol.md``):

* ``"llava"``: LLaVA's evaluation layout (``playground/data/eval/<benchmark>``): question files, ground-truth
  files and image folders; see :mod:`mmaccel.eval.benchmarks.layout_llava`.
* ``"lmms_lab"``: a local copy of the lmms-lab Hugging Face dataset (parquet files, ``<config>/<split>-*.parquet``
  or ``data/<split>-*.parquet``); see :mod:`mmaccel.eval.benchmarks.layout_lmms_lab`.

Every loader returns ``(samples, info)``; ``info`` records the layout, split, dataset version and size, so
results say which data they were computed on (POPE 8,910 vs 9,000 questions, MMBench dev 20230712 vs v1.0).
``info["excluded_ids"]`` lists questions of the source left out on purpose (ScienceQA's text-only questions,
which LLaVA answer files also contain); predictions for them are counted, not treated as unknown.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

from mmaccel.errors import DataError
from mmaccel.eval.benchmarks.base import Sample

__all__ = ["LLAVA_MARKERS", "detect_layout", "load_benchmark", "read_json", "read_jsonl", "read_text"]

log = logging.getLogger(__name__)

# Files whose presence identifies the LLaVA layout of each benchmark (any one of them, globs allowed).
LLAVA_MARKERS: dict[str, tuple[str, ...]] = {
    "mme": ("MME_Benchmark_release_version",),
    "mmbench": ("*.tsv",),
    "pope": ("coco/coco_pope_*.json", "coco_pope_*.json"),
    "scienceqa_img": ("problems.json",),
    "textvqa": ("TextVQA_0.5.1_val.json",),
    "gqa": ("data/testdev_balanced_questions.json", "testdev_balanced_questions.json"),
    "vqav2": ("v2_mscoco_val2014_annotations.json", "llava_vqav2_mscoco_*.jsonl"),
}


def detect_layout(name: str, data_dir: str | Path) -> str:
    """``"lmms_lab"`` when ``data_dir`` holds parquet files, ``"llava"`` when it holds the LLaVA files."""
    root = Path(data_dir)
    if root.is_file():
        raise DataError(f"--data {root} is a file; give the folder that holds the {name} files")
    if not root.is_dir():
        raise DataError(f"--data {root}: no such directory")
    if any(root.rglob("*.parquet")):
        return "lmms_lab"
    markers = LLAVA_MARKERS[name]
    if any(any(root.glob(marker)) for marker in markers):
        return "llava"
    raise DataError(
        f"{root} matches neither data layout of {name}: expected LLaVA evaluation files "
        f"({' or '.join(markers)}) or lmms-lab parquet files (<config>/<split>-*.parquet); "
        "see docs/benchmarks-protocol.md"
    )


def load_benchmark(
    name: str, data_dir: str | Path, split: str | None = None, limit: int | None = None, images: bool = True
) -> tuple[list[Sample], dict[str, Any]]:
    """Read benchmark ``name`` from ``data_dir`` in whichever layout it is; returns ``(samples, info)``."""
    if limit is not None and limit < 1:
        raise DataError(f"limit={limit}: must be a positive number of samples")
    layout = detect_layout(name, data_dir)
    if layout == "llava":
        from mmaccel.eval.benchmarks.layout_llava import LLAVA_LOADERS as loaders
    else:
        from mmaccel.eval.benchmarks.layout_lmms_lab import LMMS_LAB_LOADERS as loaders
    samples, info = loaders[name](Path(data_dir), split, images)
    if not samples:
        raise DataError(f"{data_dir}: no {name} questions found (layout {layout}, split {info.get('split')})")
    duplicates = [key for key, count in Counter(s.id for s in samples).items() if count > 1]
    if duplicates:
        raise DataError(f"{data_dir}: {len(duplicates)} duplicate question ids, e.g. {duplicates[:5]}")
    info = {"benchmark": name, "layout": layout, "path": str(data_dir), **info, "size": len(samples)}
    if limit is not None:
        samples = samples[:limit]
        info["limit"] = limit
    info["loaded"] = len(samples)
    log.info("loaded %d %s samples from %s (%s layout, version %s)", len(samples), name, data_dir, layout,
             info.get("version"))  # fmt: skip
    return samples, info


def check_image_files(name: str, samples: list[Sample]) -> None:
    """:class:`DataError` naming the first missing image file (and its question) before any model runs."""
    missing: dict[Path, str] = {}
    checked: set[Path] = set()
    for sample in samples:
        if isinstance(sample.image, Path) and sample.image not in checked:
            checked.add(sample.image)
            if not sample.image.is_file():
                missing[sample.image] = sample.id
    if missing:
        path, question = next(iter(missing.items()))
        raise DataError(
            f"{path}: image file not found (question {question} of {name}); {len(missing)} of the {len(checked)} "
            "image files of the loaded questions are missing: see docs/benchmarks-protocol.md for where they go"
        )


# Leading bytes of binary files people pass by mistake, and what they are.
BINARY_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"PK\x03\x04", "a ZIP archive (an .xlsx spreadsheet or a zipped folder)"),
    (b"\xd0\xcf\x11\xe0", "an Office document (.xls)"),
    (b"PAR1", "a parquet file"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"%PDF", "a PDF document"),
    (b"\x1f\x8b", "a gzip archive"),
)


def read_text(path: Path, what: str = "file") -> str:
    """The text of a UTF-8 file (a leading byte-order mark is dropped); :class:`DataError` naming the file, and
    the line of the first byte that is not UTF-8, for a folder, a missing file or a binary file."""
    if path.is_dir():
        raise DataError(f"{path} is a folder, not a {what}")
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    data = path.read_bytes()
    for signature, kind in BINARY_SIGNATURES:
        if data.startswith(signature):
            raise DataError(f"{path}: this is {kind}, not a UTF-8 text {what}")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        raise DataError(
            f"{path}:{line}: byte 0x{data[error.start]:02x} at column {column} is not UTF-8; save the {what} as "
            "UTF-8 text"
        ) from None


def read_json(path: Path) -> Any:
    """Parse a JSON file; :class:`DataError` naming the file, line and column when missing or malformed."""
    try:
        return json.loads(read_text(path, "JSON file"))
    except json.JSONDecodeError as error:
        raise DataError(f"{path}:{error.lineno}: malformed JSON at column {error.colno} ({error.msg})") from None


def read_jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for each non-empty line of a JSONL file (UTF-8, a byte-order mark allowed)."""
    rows = []
    for number, line in enumerate(read_text(path, "JSONL file").split("\n"), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}:{number}: malformed JSON line at column {error.colno} ({error.msg})") from None
        if not isinstance(value, dict):
            raise DataError(f"{path}:{number}: expected a JSON object, got {type(value).__name__}")
        rows.append((number, value))
    return rows


def require(row: dict[str, Any], keys: tuple[str, ...], where: str) -> None:
    """Raise :class:`DataError` naming ``where`` when ``row`` lacks any of ``keys``."""
    missing = [key for key in keys if key not in row]
    if missing:
        raise DataError(f"{where}: missing field(s) {', '.join(missing)}")


def unique_ids(raw_ids: list[str]) -> list[str]:
    """Keep unique ids; suffix shared ones with ``#k`` (k = occurrence, from 0) so every sample has its own."""
    counts = Counter(raw_ids)
    seen: Counter[str] = Counter()
    out = []
    for raw in raw_ids:
        if counts[raw] == 1:
            out.append(raw)
        else:
            out.append(f"{raw}#{seen[raw]}")
            seen[raw] += 1
    return out


def pope_version(per_split: dict[str, int], total: int) -> str:
    """Name the POPE release from its split sizes (random 2,910 in e3e39262; 3,000 after the fix)."""
    if per_split.get("random") == 2910 and total == 8910:
        return "AoiDragon/POPE e3e39262 (8,910 questions; LLaVA-1.5)"
    if total == 9000 and all(per_split.get(s) == 3000 for s in ("adversarial", "popular", "random")):
        return "AoiDragon/POPE fixed (9,000 questions; lmms-lab/POPE)"
    return f"unrecognised POPE release ({total} questions)"


def mmbench_version(source: str, rows: int, questions: int) -> str:
    """Name the MMBench release from its file name and sizes (dev_20230712: 4,377 rows / 1,176 questions)."""
    if "20230712" in source or (rows, questions) == (4377, 1176):
        return f"MMBench dev_20230712 ({questions} questions, {rows} rows)"
    if (rows, questions) == (4329, 1164):
        return f"MMBench v1.0 dev ({questions} questions, {rows} rows)"
    return f"MMBench ({source}: {questions} questions, {rows} rows)"
