"""The evaluation config: one dataclass field per option, filled from a YAML file, then from command-line flags.

``EvalConfig()`` is the main job: the embedded toy model on the seven synthetic suites, no method plus every
registered training-free method at 50 %, 25 % and 12.5 % of the visual tokens, with a per-suite size limit
(:data:`DEFAULT_LIMIT`) that keeps the whole job under ten minutes on two CPU cores.

The keys of :data:`RESULT_KEYS` determine the predictions; :meth:`EvalConfig.identity` holds them and
:meth:`EvalConfig.fingerprint` hashes them. A results directory holds the runs of one identity; a rerun with
another identity is refused (:func:`mmaccel.eval.checks.check_out_dir`). The selection keys (benchmarks, methods,
budgets, and ``method_options``, which are part of each run's folder name) only choose which runs exist, so a
rerun may add runs to a directory; ``batch_size``, ``device``, ``threads``, ``timing`` and ``repeats`` change
only the speed (and are recorded per run, with the load average, when it is timed).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmaccel.errors import ConfigError

__all__ = [
    "BASELINE",
    "DEFAULT_BUDGETS",
    "DEFAULT_LIMIT",
    "RESULT_KEYS",
    "EvalConfig",
    "budget_label",
    "load_config",
    "options_label",
    "parse_budgets",
]

BASELINE = "none"  # the method name of the unmodified model
DEFAULT_BUDGETS: tuple[float, ...] = (0.5, 0.25, 0.125)
# Per synthetic suite, in the suite's unit (images per MME subtask, POPE images, questions): about 640 distinct
# generations per configuration, so that the 31 configurations of the main job fit in ten minutes on two CPU
# cores (measured in the README). Worst-case standard errors at these sizes (docs/evaluation.md): MME 6.5 %
# (65 of 1000 points), POPE 9.3, MMBench 10.2, the others 6.2 points; ``--limit 0`` runs the full suites (2).
DEFAULT_LIMIT: dict[str, int] = {
    "shapes-mme": 12, "shapes-pope": 12, "shapes-mmbench": 24, "shapes-sqa": 64, "shapes-textvqa": 64,
    "shapes-gqa": 64, "shapes-vqav2": 64,
}  # fmt: skip
DTYPES = ("auto", "float32", "float16", "bfloat16")
# Keys that change predictions. Everything else changes which runs exist or how fast they go.
RESULT_KEYS: tuple[str, ...] = ("model", "data", "limit", "protocol", "dtype", "seed", "max_new_tokens")


def parse_budgets(value: Any) -> list[float | int]:
    """Budgets from a YAML list, a number, or a string ``"0.5,0.25 64"``: floats in (0, 1] or ints >= 1."""
    if isinstance(value, str):
        items: list[Any] = [item for item in value.replace(",", " ").split() if item]
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        items = [value]
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise ConfigError(f"budget={value!r}: give a number or a list such as 0.5,0.25,0.125 or 64,32")
    budgets: list[float | int] = []
    for item in items:
        text = str(item).strip()
        try:
            number: float | int = int(text) if text.lstrip("+").isdigit() else float(text)
        except ValueError:
            raise ConfigError(
                f"budget={value!r}: {text!r} is not a number; use fractions in (0, 1] (0.5,0.25) or token counts"
            ) from None
        if isinstance(number, float) and not 0 < number <= 1:
            raise ConfigError(f"budget={value!r}: the fraction {number} is outside (0, 1]")
        if isinstance(number, int) and number < 1:
            raise ConfigError(f"budget={value!r}: a token count must be at least 1, got {number}")
        if any(type(number) is type(seen) and number == seen for seen in budgets):
            raise ConfigError(
                f"budget={value!r}: {text} is given twice; each budget runs once (1 is one token, 1.0 every token)"
            )
        budgets.append(number)
    if not budgets:
        raise ConfigError(f"budget={value!r}: no budget given")
    return budgets


def budget_label(budget: float | int | None) -> str:
    """Canonical text of a budget for folder names and tables: ``0.25``, ``1.0``, ``64``, ``full``.

    A fraction always keeps its decimal point and every digit (``repr``), so a token count and a fraction never
    share a label (``1`` is one token, ``1.0`` all of them) and two different fractions never do either.
    """
    if budget is None:
        return "full"
    return str(budget) if isinstance(budget, int) else repr(float(budget))


def options_label(options: dict[str, Any]) -> str:
    """Canonical text of a method's hyper-parameters for folder names: ``""`` for none, else ``k=3,ratio=0.5``
    sorted by name (characters outside ``[A-Za-z0-9._=,+-]`` replaced), or a hash when that exceeds 60."""
    if not options:
        return ""
    values = {name: options[name] if isinstance(options[name], str) else json.dumps(options[name], default=str)
              for name in sorted(options)}  # fmt: skip
    text = ",".join(f"{name}={value}" for name, value in values.items())
    safe = "".join(c if c.isalnum() or c in "._=,+-" else "_" for c in text)
    if safe != text or len(safe) > 60:
        safe = safe[:40] + "-" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
    return safe


@dataclass
class EvalConfig:
    """Every option of ``mmaccel eval``; each is a YAML key and a flag (``batch_size`` is ``--batch-size``).

    ``benchmarks``: synthetic suite names (``shapes-pope``) or real benchmark names (``pope``, with ``data``).
    ``methods``: registered method names; ``none`` is the unmodified model (always run once, at no budget).
    ``limit``: per benchmark (one number for all, or a mapping from benchmark name): for a synthetic suite its
    size in the suite's unit, for real data the first ``limit`` samples; ``0`` means everything. ``data``: for a
    synthetic suite a folder that holds (or receives) ``<suite>/``; for a real benchmark its data folder.
    ``method_options``: hyper-parameters per method name.
    """

    model: str = "toy"
    benchmarks: list[str] = field(default_factory=lambda: [])  # empty: the seven synthetic suites
    methods: list[str] = field(default_factory=lambda: [])  # empty: none + every registered method
    budgets: list[float | int] = field(default_factory=lambda: list(DEFAULT_BUDGETS))
    data: str | None = None
    limit: int | dict[str, int] = field(default_factory=lambda: dict(DEFAULT_LIMIT))
    protocol: str = "llava"
    batch_size: int = 32
    max_new_tokens: int = 8
    out: str = "results/main"
    device: str = "cpu"
    dtype: str = "auto"
    seed: int = 0
    threads: int = 0  # torch CPU threads; 0 leaves torch's default
    timing: bool = True  # warm-up and per-batch prefill / decode timing
    repeats: int = 3  # timed batches per run at least: the first batch is timed again until there are this many
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.budgets = parse_budgets(self.budgets)
        for name in ("batch_size", "max_new_tokens", "repeats"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)!r}: must be a positive integer")
        limits = self.limit.values() if isinstance(self.limit, dict) else [self.limit]
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in limits):
            raise ConfigError(
                f"limit={self.limit!r}: must be a non-negative integer (0 = whole benchmarks) or a mapping of "
                "benchmark names to such integers"
            )
        if not isinstance(self.threads, int) or self.threads < 0:
            raise ConfigError(f"threads={self.threads!r}: must be a non-negative integer (0 = torch's default)")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype={self.dtype!r}: choose one of {', '.join(DTYPES)}")
        if not isinstance(self.seed, int):
            raise ConfigError(f"seed={self.seed!r}: must be an integer")
        if not isinstance(self.method_options, dict) or any(
            not isinstance(v, dict) for v in self.method_options.values()
        ):
            raise ConfigError("method_options: must map method names to {hyper-parameter: value} mappings")
        for name in ("benchmarks", "methods"):
            value = getattr(self, name)
            if isinstance(value, str):
                value = [item for item in value.replace(",", " ").split() if item]
            if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
                raise ConfigError(f"{name}={value!r}: must be a list of names")
            setattr(self, name, value)

    def limit_for(self, benchmark: str) -> int:
        """The limit of ``benchmark`` (0: all of it); a benchmark a limit mapping leaves out runs whole."""
        return self.limit.get(benchmark, 0) if isinstance(self.limit, dict) else self.limit

    # -- identity ----------------------------------------------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        """The result-determining keys and their values."""
        return {key: getattr(self, key) for key in RESULT_KEYS}

    def fingerprint(self) -> str:
        """A short stable hash of :meth:`identity`."""
        text = json.dumps(self.identity(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def with_overrides(self, overrides: dict[str, Any]) -> EvalConfig:
        """A copy with ``overrides`` (unknown keys raise :class:`ConfigError` naming them)."""
        check_keys(overrides, "override")
        return EvalConfig(**{**self.as_dict(), **overrides})


def check_keys(values: dict[str, Any], where: str) -> None:
    allowed = [f.name for f in dataclasses.fields(EvalConfig)]
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}")


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> EvalConfig:
    """The config of YAML file ``path`` (if any) with ``overrides`` (the flags given) on top."""
    import yaml

    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as error:
            raise ConfigError(f"config file {str(path)!r} is not valid YAML: {error}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {str(path)!r} must hold a mapping of option names to values")
        loaded = {str(key).replace("-", "_"): value for key, value in loaded.items()}
        check_keys(loaded, f"config file {str(path)!r}")
        values.update(loaded)
    overrides = dict(overrides or {})
    check_keys(overrides, "flags")
    values.update(overrides)
    try:
        return EvalConfig(**values)
    except TypeError as error:  # a wrong type the dataclass rejected before validation
        raise ConfigError(f"config: {error}") from None
