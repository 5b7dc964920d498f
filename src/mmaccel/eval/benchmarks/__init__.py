"""Benchmarks: local-data loaders, LLaVA-1.5 prompts and reference-exact scorers.

Importing this package registers MME, MMBench, POPE, ScienceQA-IMG, TextVQA, GQA and VQAv2; see
``docs/benchmarks-protocol.md`` for the metric and protocol options of each.
"""

from __future__ import annotations

from mmaccel.eval.benchmarks import gqa, mmbench, mme, pope, scienceqa, textvqa, vqav2  # noqa: F401
from mmaccel.eval.benchmarks.base import PROTOCOLS, Benchmark, Sample
from mmaccel.eval.benchmarks.registry import get_benchmark, list_benchmarks, register_benchmark

__all__ = ["PROTOCOLS", "Benchmark", "Sample", "get_benchmark", "list_benchmarks", "register_benchmark"]
