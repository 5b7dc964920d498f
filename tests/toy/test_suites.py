"""Synthetic suites: written in the real formats, read back by the real loaders, scored by the real scorers."""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmaccel.errors import ConfigError
from mmaccel.eval.benchmarks import get_benchmark
from mmaccel.eval.benchmarks.normalize import evalai_normalize
from mmaccel.eval.benchmarks.pope import SPLITS
from mmaccel.eval.benchmarks.score import score_predictions
from mmaccel.toy.questions import CORNER_HINT, LETTERS
from mmaccel.toy.suites import SUITES, get_suite, write_suite
from mmaccel.toy.suites.answers import alternatives, human_answers, surface_forms
from mmaccel.toy.suites.choice import MMBENCH_CATEGORIES, mmbench_items, sqa_items
from mmaccel.toy.suites.common import absent_pools
from mmaccel.toy.suites.open_ended import gqa_items, textvqa_items, vqav2_items
from mmaccel.toy.suites.registry import POPE_WORST_VARIANCE
from mmaccel.toy.suites.yesno import MME_SUBTASKS, mme_items, pope_items
from mmaccel.toy.world import CORNERS, GRID, render

SMALL = 6  # items per suite in the fast tests


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict[str, Path]:
    """Every suite at a small size, written once for the module."""
    base = tmp_path_factory.mktemp("suites")
    return {name: _write(name, base / name) for name in SUITES}


def _write(name: str, root: Path, size: int = SMALL) -> Path:
    write_suite(name, root, size)
    return root


def _load(name: str, root: Path, images: bool = True):
    bench = get_benchmark(get_suite(name).benchmark)
    samples = bench.load(root, images=images)
    return bench, samples


def _predict(tmp_path: Path, name: str, root: Path, answer_of) -> dict:
    """Score ``answer_of(sample)`` for every sample through a predictions file, as ``mmaccel score`` does."""
    bench, samples = _load(name, root, images=False)
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps({"id": s.id, "prediction": answer_of(s)}) + "\n" for s in samples))
    return score_predictions(bench.name, root, path)["metrics"]


# ------------------------------------------------------------------------------------------------ read back


@pytest.mark.parametrize("name", list(SUITES))
def test_suite_reads_back_with_the_real_loader(written, name):
    bench, samples = _load(name, written[name])
    manifest = json.loads((written[name] / "shapes_suite.json").read_text())
    assert manifest["suite"] == name and manifest["size"] == SMALL
    expected = {
        "shapes-mme": 2 * len(MME_SUBTASKS) * SMALL,
        "shapes-pope": 3 * 6 * SMALL,
        "shapes-mmbench": manifest.get("rows"),
        "shapes-sqa": SMALL,
        "shapes-textvqa": SMALL,
        "shapes-gqa": SMALL,
        "shapes-vqav2": SMALL,
    }[name]
    assert len(samples) == expected
    assert bench.dataset_info()["layout"] == "llava"
    image = samples[0].image
    with Image.open(image) if isinstance(image, Path) else image as opened:
        assert opened.size == (112, 112)
    for sample in samples:  # every prompt builds under the default (llava) protocol
        assert sample.question.split("?")[0].lower() in bench.prompt(sample).lower()


def test_mme_has_one_yes_and_one_no_per_image(written):
    _, samples = _load("shapes-mme", written["shapes-mme"], images=False)
    per_image = defaultdict(list)
    for sample in samples:
        per_image[(sample.meta["category"], sample.meta["image_id"])].append(sample.answers[0])
    assert {category for category, _ in per_image} == set(MME_SUBTASKS)
    assert all(sorted(answers) == ["No", "Yes"] for answers in per_image.values())
    assert all(sample.question.endswith(" Please answer yes or no.") for sample in samples)


def test_pope_has_three_splits_sharing_images_and_positives(written):
    _, samples = _load("shapes-pope", written["shapes-pope"])
    by_split = defaultdict(list)
    for sample in samples:
        by_split[sample.meta["category"]].append(sample)
    assert set(by_split) == set(SPLITS)
    positives = {}
    for split, rows in by_split.items():
        assert len(rows) == 6 * SMALL
        assert [row.answers[0] for row in rows] == ["yes", "no"] * 3 * SMALL  # alternating, as POPE files are
        per_image = Counter((str(row.image), row.answers[0]) for row in rows)
        assert set(per_image.values()) == {3}
        positives[split] = [(str(row.image), row.question) for row in rows if row.answers[0] == "yes"]
    assert positives["random"] == positives["popular"] == positives["adversarial"]


def test_pope_objects_are_present_or_absent_by_construction():
    for item in pope_items(2, 30):
        present = {(obj.color, obj.shape) for obj in item.scene.objects}
        assert len(present) >= 3 and set(item.positives) <= present and len(set(item.positives)) == 3
        pools = absent_pools(item.scene)
        for split in SPLITS:
            negatives = item.negatives[split]
            assert len(set(negatives)) == 3 and not set(negatives) & present
            strict = [pair for pair in negatives if pair in pools[split]]
            assert len(strict) == 3 - item.fallbacks[split]
            if split == "adversarial" and item.fallbacks[split] == 0:
                colors = {color for color, _ in present}
                shapes = {shape for _, shape in present}
                assert all(color in colors and shape in shapes for color, shape in negatives)


def _mme_truth(item) -> tuple[bool, bool]:
    """Answer the MME pair again from the scene description alone."""
    scene = item.scene

    def holds(question: str) -> bool:
        words = question.rstrip("?").replace('"', "").split()
        if item.category == "existence":
            return bool(scene.find(color=words[3], shape=words[4]))
        if item.category == "count":
            count = int(words[2])
            noun = " ".join(words[3:-3])
            if noun in ("shape", "shapes"):
                return len(scene.objects) == count
            if noun.endswith(("shape", "shapes")):
                return len(scene.find(color=noun.split()[0])) == count
            return len(scene.find(shape=noun.rstrip("s"))) == count
        if item.category == "position":
            (obj,) = scene.find(color=words[2], shape=words[3])
            side = words[6]
            return {"left": obj.col < GRID // 2, "right": obj.col >= GRID // 2, "top": obj.row < GRID // 2,
                    "bottom": obj.row >= GRID // 2}[side]  # fmt: skip
        if item.category == "color":
            (obj,) = scene.find(shape=words[2])
            return obj.color == words[-1]
        return scene.sign.text == words[-1]

    return holds(item.yes), holds(item.no)


def test_mme_answers_are_correct_by_construction():
    for item in mme_items(1, 25):
        assert _mme_truth(item) == (True, False), item


def test_files_hold_the_items_images_and_answers(written):
    """The bytes on disk are the rendered scenes and the answers of the items (PNG exact, JPEG close)."""
    root = written["shapes-mme"] / "MME_Benchmark_release_version"
    for index, item in enumerate(mme_items(1, SMALL)):
        stem = root / item.category / f"{index % SMALL:04d}"
        np.testing.assert_array_equal(np.asarray(Image.open(stem.with_suffix(".png"))), render(item.scene))
        assert stem.with_suffix(".txt").read_text().splitlines()[0].startswith(item.yes)
    _, samples = _load("shapes-gqa", written["shapes-gqa"])
    for sample, item in zip(samples, gqa_items(6, SMALL)):
        assert (sample.question, sample.answers) == (item.question.text, [item.question.answer])
        pixels = np.asarray(Image.open(sample.image)).astype(float)
        assert np.abs(pixels - render(item.scene)).mean() < 5  # JPEG, quality 95
    _, samples = _load("shapes-sqa", written["shapes-sqa"])
    image_items = [item for item in sqa_items(4, SMALL) if item.scene is not None]
    for sample, item in zip(samples, image_items):
        assert (
            sample.meta["choices"][int(sample.answers[0])]
            == item.question.options[LETTERS.index(item.question.answer)]
        )
        np.testing.assert_array_equal(np.asarray(Image.open(sample.image).convert("RGB")), render(item.scene))


def test_mmbench_rows_are_consistent_circular_rotations(written):
    _, samples = _load("shapes-mmbench", written["shapes-mmbench"])
    groups = defaultdict(list)
    for sample in samples:
        groups[sample.meta["index"] % 1_000_000].append(sample)
    assert len(groups) == SMALL
    categories = set(MMBENCH_CATEGORIES.values())
    for group, rows in groups.items():
        rows.sort(key=lambda sample: sample.meta["index"])
        first = list(rows[0].meta["options"].values())
        assert len(rows) == len(first) in (3, 4)
        correct = {row.meta["options"][row.answers[0]] for row in rows}
        assert len(correct) == 1  # every rotation's letter points to the same option text
        for shift, row in enumerate(rows):
            assert row.meta["index"] == group + shift * 1_000_000
            assert list(row.meta["options"].values()) == first[shift:] + first[:shift]
            assert (row.meta["category"], row.meta["l2_category"]) in categories
            assert row.question == rows[0].question and row.meta["hint"] == rows[0].meta["hint"]
    assert {item.question.subtype for item in mmbench_items(3, 40)} == set(MMBENCH_CATEGORIES)
    assert any(item.hint for item in mmbench_items(3, 40))


def test_sqa_has_hints_choices_and_excluded_text_only_questions(written):
    bench, samples = _load("shapes-sqa", written["shapes-sqa"])
    assert len(bench.dataset_info()["excluded_ids"]) == SMALL // 4
    for sample in samples:
        assert 2 <= len(sample.meta["choices"]) <= 3 and int(sample.answers[0]) < len(sample.meta["choices"])
        assert sample.meta["hint"] in ("", CORNER_HINT)
    for item in sqa_items(4, 40):
        if item.scene is None:  # text only: the context alone answers it
            corners = {option: CORNERS[option.split()[1]] for option in item.question.options}
            pick = max if item.question.subtype == "most" else min
            assert corners[item.question.options[LETTERS.index(item.question.answer)]] == pick(corners.values())
    prompt = bench.prompt(next(s for s in samples if s.meta["hint"]))
    assert prompt.startswith(f"Context: {CORNER_HINT}\n")


@pytest.mark.parametrize("name", ["shapes-textvqa", "shapes-vqav2"])
def test_vqa_questions_have_ten_human_answers(written, name):
    _, samples = _load(name, written[name], images=False)
    for sample in samples:
        assert len(sample.answers) == 10
        normalized = Counter(evalai_normalize(answer) for answer in sample.answers)
        assert normalized.most_common(1)[0][1] >= 6
    if name == "shapes-textvqa":
        assert all(sample.meta["ocr_tokens"] is not None for sample in samples)
    else:
        kinds = {item.question.kind for item in vqav2_items(7, 60)}
        assert {"exist", "count"} <= kinds and len(kinds) >= 5


def test_human_answers_vary_in_form_and_sometimes_disagree():
    rng = np.random.default_rng(0)
    assert "two" in surface_forms("2") and "a circle" in surface_forms("circle")
    assert all(evalai_normalize(form) == evalai_normalize("K7") for form in surface_forms("K7"))
    assert "1" in alternatives("2", "count") and "violet" in alternatives("purple", "color")
    assert "K1" in alternatives("K7", "text")
    sets = [human_answers("2", "count", rng) for _ in range(200)]
    assert any("two" in answers for answers in sets)
    disagreeing = [sum(evalai_normalize(a) != "2" for a in answers) for answers in sets]
    assert max(disagreeing) <= 4 and 0 < sum(disagreeing) / len(sets) < 2.5


def test_gqa_has_one_answer_and_structural_types(written):
    _, samples = _load("shapes-gqa", written["shapes-gqa"], images=False)
    assert all(len(sample.answers) == 1 and sample.answers[0] == sample.answers[0].lower() for sample in samples)
    types = {item.question.kind for item in gqa_items(6, 60)}
    assert types == {"relation", "exist", "position", "color", "shape"}
    assert all(sample.meta["structural"] in ("query", "verify", "choose") for sample in samples)


def test_textvqa_ocr_tokens_only_sometimes_give_the_answer():
    items = textvqa_items(5, 80)
    exact = sum(item.ocr_tokens == (item.question.answer.lower(),) for item in items)
    assert 0 < exact < len(items) and any(not item.ocr_tokens for item in items)


# ---------------------------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("name", list(SUITES))
def test_same_seed_gives_the_same_bytes(tmp_path, written, name):
    again = _write(name, tmp_path / name)
    files = sorted(p.relative_to(written[name]) for p in written[name].rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert all((written[name] / f).read_bytes() == (again / f).read_bytes() for f in files)


def test_smaller_suites_are_prefixes_of_larger_ones():
    assert pope_items(2, 3) == pope_items(2, 5)[:3]
    assert mmbench_items(3, 2) == mmbench_items(3, 4)[:2]
    assert vqav2_items(7, 2) == vqav2_items(7, 3)[:2]


# ------------------------------------------------------------------------------------- scorer on predictions


def _truth(sample) -> str:
    if "choices" in sample.meta:  # ScienceQA stores the 0-based index
        return LETTERS[int(sample.answers[0])]
    if len(sample.answers) > 1:  # VQA: the answer most annotators gave, in its normalised form
        return _majority(sample.answers)
    return sample.answers[0]


@pytest.mark.parametrize("name", list(SUITES))
def test_ground_truth_predictions_score_the_maximum(tmp_path, written, name):
    metrics = _predict(tmp_path, name, written[name], _truth)
    maximum = 200.0 * len(MME_SUBTASKS) if name == "shapes-mme" else 100.0
    assert metrics[metrics["headline"]] == pytest.approx(maximum)


def test_all_yes_gives_the_expected_pope_and_mme_figures(tmp_path, written):
    pope = _predict(tmp_path, "shapes-pope", written["shapes-pope"], lambda sample: "Yes")
    for split in SPLITS:  # precision 1/2, recall 1
        assert pope["splits"][split]["f1"] == pytest.approx(200 / 3)
        assert pope["splits"][split]["yes_ratio"] == pytest.approx(100)
    assert pope["mean_f1"] == pytest.approx(200 / 3) and pope["acc"] == pytest.approx(50)
    mme = _predict(tmp_path, "shapes-mme", written["shapes-mme"], lambda sample: "Yes")
    assert all(task["acc"] == 50 and task["acc_plus"] == 0 for task in mme["subtasks"].values())
    assert mme["perception"] == pytest.approx(50 * len(MME_SUBTASKS))


def test_always_a_fails_circular_eval(tmp_path, written):
    _, samples = _load("shapes-mmbench", written["shapes-mmbench"], images=False)
    metrics = _predict(tmp_path, "shapes-mmbench", written["shapes-mmbench"], lambda sample: "A")
    share_a = 100 * sum(sample.answers[0] == "A" for sample in samples) / len(samples)
    assert metrics["pass_accuracy"] == pytest.approx(share_a) and 0 < share_a < 100
    assert metrics["circular_accuracy"] == 0  # the right letter moves with every rotation


@pytest.mark.parametrize("name", ["shapes-textvqa", "shapes-vqav2"])
def test_vqa_accuracy_gives_partial_credit_for_minority_answers(tmp_path, name):
    root = _write(name, tmp_path / name, size=40)
    bench, samples = _load(name, root, images=False)
    checked = Counter()
    for sample in samples:
        canonical = _majority(sample.answers)
        counts = Counter(evalai_normalize(answer) for answer in sample.answers)
        for answer, count in counts.items():
            if answer == canonical:
                continue
            raw = next(a for a in sample.answers if evalai_normalize(a) == answer)
            expected = {1: 0.3, 2: 0.6, 3: 0.9}[count]  # leave-one-out mean of min(1, matches / 3)
            assert bench.score(sample, raw)["accuracy"] == pytest.approx(expected)
            checked[count] += 1
        upper = bench.score(sample, canonical.upper() + ".")["accuracy"]  # another surface form of the answer
        assert upper == pytest.approx(1.0) or canonical == ""
    assert checked[1] > 0 and checked[2] > 0


def _majority(answers: list[str]) -> str:
    return Counter(evalai_normalize(answer) for answer in answers).most_common(1)[0][0]


# ------------------------------------------------------------------------------------- sizes and bad input


def test_full_sizes_keep_one_standard_error_within_two_points():
    for suite in SUITES.values():
        assert suite.se_bound(suite.size) <= 2.0, suite.name
        assert suite.se_bound(suite.size // 2) > 2.0, suite.name  # and are not much larger than needed
    assert get_suite("shapes-mme").headline_se_bound() == pytest.approx(10 * get_suite("shapes-mme").se_bound(128))


def test_pope_worst_case_variance_constant():
    """``P * Var(mean F1)`` by the delta method, maximised over recall and the three false-positive rates."""
    recall = np.linspace(0.001, 1, 500)[:, None]
    fp_rate = np.linspace(0, 1, 201)[None, :]
    d_recall = 2 * (1 + fp_rate) / (1 + recall + fp_rate) ** 2
    d_fp = 2 * recall / (1 + recall + fp_rate) ** 2
    # equal false-positive rates in the three splits; the split terms add a third of one split's variance
    variance = d_recall**2 * recall * (1 - recall) + d_fp**2 * fp_rate * (1 - fp_rate) / 3
    assert variance.max() == pytest.approx(POPE_WORST_VARIANCE, abs=5e-4)
    assert get_suite("shapes-pope").se_bound(260) == pytest.approx(100 * math.sqrt(0.3098 / 780))


def test_bad_names_sizes_and_folders_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="shapes-pope"):
        get_suite("pope")
    with pytest.raises(ConfigError, match="size=0"):
        write_suite("shapes-gqa", tmp_path / "a", size=0)
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not an empty folder"):
        write_suite("shapes-gqa", tmp_path / "user", size=1)
    write_suite("shapes-gqa", tmp_path / "gqa", size=1)
    with pytest.raises(ConfigError, match="holds shapes-gqa of size 1"):
        write_suite("shapes-vqav2", tmp_path / "gqa", size=1)
    assert (tmp_path / "user" / "notes.txt").read_text() == "mine"


@pytest.mark.slow
def test_full_size_suites_read_back(tmp_path):
    expected = {"shapes-mme": 1280, "shapes-pope": 4680, "shapes-sqa": 640, "shapes-textvqa": 640,
                "shapes-gqa": 640, "shapes-vqav2": 640}  # fmt: skip
    for name, suite in SUITES.items():
        manifest = write_suite(name, tmp_path / name)
        _, samples = _load(name, tmp_path / name, images=False)
        if name == "shapes-mmbench":
            assert len({s.meta["index"] % 1_000_000 for s in samples}) == 640 and len(samples) == manifest["rows"]
        else:
            assert len(samples) == expected[name]
        assert manifest["se_bound"] <= 2.0 and manifest["size"] == suite.size


# ------------------------------------------------------------------------------------------------- runner


@pytest.fixture(scope="module")
def tiny():
    """A random-weight toy-architecture LLaVA with the toy processor (outputs are arbitrary but deterministic)."""
    import torch
    from transformers import LlavaForConditionalGeneration

    from mmaccel.toy.model import toy_config
    from mmaccel.toy.processor import build_processor
    from mmaccel.toy.tokenizer import build_tokenizer

    torch.manual_seed(0)
    config = toy_config(vision_hidden=32, vision_layers=2, text_hidden=64, text_layers=2, text_heads=4)
    return LlavaForConditionalGeneration(config).eval(), build_processor(build_tokenizer())


def test_batched_left_padded_answers_equal_single_answers(tiny, written):
    from mmaccel.eval.generation import generate_answers

    model, processor = tiny
    processor.tokenizer.padding_side = "right"
    bench, samples = _load("shapes-gqa", written["shapes-gqa"])
    requests = [(sample.image, bench.prompt(sample)) for sample in samples]
    requests += [requests[0], (requests[1][0], "What is written on the sign?")]  # a repeat, a shorter prompt
    batched = generate_answers(model, processor, requests, batch_size=4, max_new_tokens=3)
    single = [generate_answers(model, processor, [request], batch_size=1, max_new_tokens=3)[0] for request in requests]
    assert batched == single and batched[-2] == batched[0]
    assert processor.tokenizer.padding_side == "right"  # restored
    seen = []
    generate_answers(model, processor, requests, batch_size=3, max_new_tokens=1, progress=seen.append)
    assert sum(seen) == len(requests) and len(seen) == 3  # the repeat is generated once, counted twice
    with pytest.raises(ConfigError, match="batch_size=0"):
        generate_answers(model, processor, requests, batch_size=0)


def test_answers_can_be_generated_inside_an_applied_method(tiny, written):
    import mmaccel
    from mmaccel.eval.generation import generate_answers

    model, processor = tiny
    bench, samples = _load("shapes-vqav2", written["shapes-vqav2"])
    requests = [(sample.image, bench.prompt(sample)) for sample in samples]
    with mmaccel.apply(model, "pool", budget=16) as session:
        answers = generate_answers(model, processor, requests, batch_size=4, max_new_tokens=2)
    assert len(answers) == len(requests) and all(isinstance(answer, str) for answer in answers)
    assert len(session.calls) == 2  # one prefill per batch of 4
    assert {stats.llm_input_tokens for call in session.calls for stats in call.stats} == {16}


def test_evaluate_suite_writes_predictions_that_mmaccel_score_reproduces(tiny, written, tmp_path, capsys):
    from mmaccel.cli import main
    from mmaccel.toy.bench import evaluate_suite

    model, processor = tiny
    result = evaluate_suite(model, processor, "shapes-pope", written["shapes-pope"], tmp_path, batch_size=16,
                            max_new_tokens=2, bootstrap_draws=20)  # fmt: skip
    assert result.headline == "mean_f1" and 0 <= result.value <= 100 and result.se is not None
    _, samples = _load("shapes-pope", written["shapes-pope"])
    distinct = {(str(sample.image), sample.question) for sample in samples}  # positives are shared by the splits
    assert result.questions == 18 * SMALL and result.generated == len(distinct) <= 12 * SMALL
    lines = [json.loads(line) for line in Path(result.predictions).read_text().splitlines()]
    assert len(lines) == result.questions and {"id", "prediction", "prompt"} <= set(lines[0])
    metrics_path = tmp_path / "rescored.json"
    args = ["score", "--benchmark", "pope", "--data", str(written["shapes-pope"]), "--predictions",
            result.predictions, "--out", str(metrics_path)]  # fmt: skip
    assert main(args) == 0
    assert json.loads(metrics_path.read_text())["metrics"]["mean_f1"] == pytest.approx(result.value)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["suite"] == "shapes-pope" and saved["standard_error"] == pytest.approx(result.se)


def test_standard_errors_match_the_binomial_one():
    from mmaccel.eval.stats import bootstrap_se, standard_error

    bench = get_benchmark("gqa")
    rows = [{"id": str(i), "structural": "", "accuracy": float(i % 4 == 0)} for i in range(400)]
    units = [row["id"] for row in rows]
    binomial = 100 * math.sqrt(0.25 * 0.75 / 399)  # sample SD with ddof=1
    assert standard_error(bench, rows, units) == pytest.approx(binomial)
    assert bootstrap_se(bench, rows, units, draws=400) == pytest.approx(binomial, rel=0.15)
    mme = get_benchmark("mme")  # resampled copies of an image stay separate images for acc+
    rows = [{"id": f"{i}#{k}", "category": "count", "image_id": str(i), "label": "yes", "parsed": "yes",
             "correct": float(i % 2 == 0)} for i in range(40) for k in range(2)]  # fmt: skip
    se = standard_error(mme, rows, [row["image_id"] for row in rows], draws=400)
    assert se == pytest.approx(200 * math.sqrt(0.25 / 40), rel=0.15)  # score per image: 0 or 200, half each


def test_toy_suites_command_writes_the_suites(tmp_path, capsys):
    from mmaccel.cli import main

    assert main(["toy", "suites", "--out", str(tmp_path), "--suite", "shapes-gqa", "--suite", "shapes-mme",
                 "--size", "2"]) == 0  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shapes-gqa", "shapes-mme"]
    assert "shapes-mme: 2 images per subtask" in capsys.readouterr().out
    assert main(["toy", "bench", "--batch-size", "0"]) == 2
    assert "--batch-size 0" in capsys.readouterr().err
