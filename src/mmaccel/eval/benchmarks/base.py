"""The :class:`Benchmark` interface and the :class:`Sample` record every benchmark loads.

A benchmark owns four things: how to read its data from a local directory (:meth:`Benchmark.load`), the prompt
text that follows the image (:meth:`Benchmark.prompt`), a pure per-item scorer (:meth:`Benchmark.score`) and the
aggregation of per-item rows into the reported metrics (:meth:`Benchmark.aggregate`). Where the reference
toolkits disagree, all four take a ``protocol``: ``"llava"`` (the LLaVA-1.5 evaluation scripts, the default),
``"lmms_eval"`` or ``"vlmevalkit"``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar

from mmaccel.errors import ConfigError

__all__ = ["PROTOCOLS", "SHORT_ANSWER_SUFFIX", "Benchmark", "Sample", "check_protocol"]

PROTOCOLS: tuple[str, ...] = ("llava", "lmms_eval", "vlmevalkit")
SHORT_ANSWER_SUFFIX = "\nAnswer the question using a single word or phrase."
LETTER_SUFFIX = "\nAnswer with the option's letter from the given choices directly."
CORRECTNESS_KEYS = ("correct", "accuracy")  # the per-item fields of score() rows that aggregate() averages


@dataclasses.dataclass
class Sample:
    """One benchmark question.

    Attributes:
        id: unique id within the loaded benchmark; mmaccel's ``predictions.jsonl`` joins on it.
        question: the question text as stored in the source data.
        image: a path, a PIL image, or ``None`` (text-only questions, or images not loaded).
        answers: the ground truth: one string, or the human answers for VQA-style benchmarks.
        meta: everything else a prompt or scorer needs (category, split, index, choices, hint, ...). The key
            ``"llava_question_id"`` holds the ``question_id`` that LLaVA's answer files use when it differs
            from :attr:`id` or is shared by several questions.
    """

    id: str
    question: str
    image: Any = None
    answers: list[str] = dataclasses.field(default_factory=list)
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)


def check_protocol(protocol: str, allowed: tuple[str, ...] = PROTOCOLS) -> str:
    """Return ``protocol`` or raise :class:`ConfigError` naming the allowed ones."""
    if protocol not in allowed:
        raise ConfigError(f"protocol={protocol!r} is not supported here; choose one of {', '.join(allowed)}")
    return protocol


class Benchmark:
    """Base class of the benchmarks; subclasses set the class attributes and override the four methods."""

    name: ClassVar[str] = ""
    protocols: ClassVar[tuple[str, ...]] = PROTOCOLS
    headline: ClassVar[str] = "accuracy"  # the key of the main number in aggregate()'s result
    description: ClassVar[str] = ""
    references: ClassVar[dict[str, str]] = {}  # protocol -> the reference scorer it reproduces (owner/repo:path)

    def load(self, data_dir: str | Path, split: str | None = None, limit: int | None = None, *, images: bool = True):
        """Read the benchmark from ``data_dir`` (LLaVA evaluation layout or lmms-lab parquet layout).

        Returns the :class:`Sample` list; the dataset facts (layout, split, version, size) are available
        afterwards from :meth:`dataset_info`. ``images=False`` skips reading image bytes (scoring needs none);
        with images, every image file must exist (:class:`DataError` naming the first missing one), so that a
        generation never starts on data it cannot finish.
        """
        from mmaccel.eval.benchmarks.loaders import check_image_files, load_benchmark

        samples, info = load_benchmark(self.name, data_dir, split=split, limit=limit, images=images)
        if images:
            check_image_files(self.name, samples)
        self._info = info
        return samples

    def dataset_info(self) -> dict[str, Any]:
        """Layout, split, version and size of the last :meth:`load` (empty before any load)."""
        return dict(getattr(self, "_info", {}))

    def prompt(self, sample: Sample, protocol: str = "llava") -> str:
        """The text that follows the image, without the chat template."""
        raise NotImplementedError

    def score(self, sample: Sample, prediction: str, protocol: str = "llava") -> dict[str, Any]:
        """Score one prediction; pure. The row carries what :meth:`aggregate` needs (id, category, ...)."""
        raise NotImplementedError

    def score_missing(self, sample: Sample, protocol: str = "llava") -> dict[str, Any]:
        """The row of a question left without a prediction and scored as wrong (``--missing wrong``): the row of
        an empty answer with every correctness field at 0, whatever the protocol reads into an empty answer."""
        row = self.score(sample, "", protocol)
        for key in CORRECTNESS_KEYS:
            if key in row:
                row[key] = 0.0
        row["missing"] = True
        return row

    def aggregate(self, rows: list[dict[str, Any]], protocol: str = "llava") -> dict[str, Any]:
        """Combine per-item rows into metrics; percentages are on a 0-100 scale, unrounded."""
        raise NotImplementedError

    def match_key(self, question_id: str) -> str:
        """The form of a question id that predictions are joined on (the id itself, unless a benchmark's ids carry
        parts that may differ between the data and a prediction file)."""
        return question_id

    def question_key(self, text: str) -> str:
        """Compare-key of a question, used to tell apart questions that share a LLaVA ``question_id``."""
        return text.replace("<image>", "").strip().split("\n")[0].strip().lower()

    def check(self, protocol: str) -> str:
        return check_protocol(protocol, self.protocols)
