"""Loaders of both layouts: ids, fields, versions, images, limits and errors."""

from __future__ import annotations

import json

import pytest

from mmaccel.errors import ConfigError, DataError
from mmaccel.eval.benchmarks import get_benchmark, list_benchmarks
from mmaccel.eval.benchmarks.loaders import detect_layout, load_benchmark, pope_version
from tests.eval._benchmark_data import (
    llava_mmbench,
    llava_mme,
    llava_pope,
    llava_scienceqa,
    llava_textvqa,
    lmms_pope,
    lmms_scienceqa,
)


def test_registry_lists_the_benchmarks_and_names_them_on_error():
    images = ["gqa", "mmbench", "mme", "pope", "scienceqa_img", "textvqa", "vqav2"]
    videos = ["mvbench", "nextqa", "videomme", "videomme_w_subtitle"]
    assert list_benchmarks() == sorted(images + videos)
    assert get_benchmark("ScienceQA-IMG").name == "scienceqa_img"
    with pytest.raises(ConfigError, match="known benchmarks: gqa, mmbench"):
        get_benchmark("mmmu")


def test_llava_pope_ids_use_llava_offsets_and_splits(tmp_path):
    data, _ = llava_pope(tmp_path)
    samples, info = load_benchmark("pope", data, images=True)
    assert [s.id for s in samples] == ["1", "2", "10000001", "10000002"]
    assert samples[0].image == data / "val2014" / "COCO_1.jpg"
    assert info["per_split"] == {"adversarial": 2, "random": 2}
    only, _ = load_benchmark("pope", data, split="random", images=False)
    assert {s.meta["category"] for s in only} == {"random"}
    assert only[0].image is None
    limited, info = load_benchmark("pope", data, limit=3)
    assert (len(limited), info["size"], info["loaded"]) == (3, 4, 3)


@pytest.mark.parametrize(
    ("per_split", "version"),
    [
        ({"adversarial": 3000, "popular": 3000, "random": 2910}, "e3e39262 (8,910 questions; LLaVA-1.5)"),
        ({"adversarial": 3000, "popular": 3000, "random": 3000}, "fixed (9,000 questions; lmms-lab/POPE)"),
    ],
)
def test_pope_versions_are_named(per_split, version):
    assert version in pope_version(per_split, sum(per_split.values()))


def test_llava_mme_ids_group_two_questions_per_image(tmp_path):
    data, _ = llava_mme(tmp_path)
    samples, _ = load_benchmark("mme", data)
    by_id = {s.id: s for s in samples}
    assert set(by_id) == {
        "code_reasoning/0020.png#0",
        "code_reasoning/0020.png#1",
        "existence/images/000.jpg#0",
        "existence/images/000.jpg#1",
    }
    assert by_id["existence/images/000.jpg#1"].answers == ["No"]
    assert by_id["code_reasoning/0020.png#0"].meta["image_id"] == "code_reasoning/0020.png"


def test_llava_scienceqa_keeps_image_questions(tmp_path):
    data, _ = llava_scienceqa(tmp_path)
    samples, info = load_benchmark("scienceqa_img", data)
    assert [s.id for s in samples] == ["11", "46"]
    assert samples[1].meta == {"choices": ["shiny", "slippery", "opaque"], "hint": "Select the best answer."}
    assert samples[1].answers == ["2"]
    assert info["excluded_ids"] == ["7"]


def test_llava_mmbench_reads_options_until_the_first_missing(tmp_path):
    data, _ = llava_mmbench(tmp_path)
    samples, info = load_benchmark("mmbench", data)
    assert samples[0].meta["options"] == {"A": "cat", "B": "dog"}
    assert samples[2].meta["options"] == {"A": "red", "B": "blue", "C": "green"}
    assert samples[0].meta["hint"] is None
    assert samples[2].meta["hint"] == "A sunny day."
    assert "dev_20230712" in info["version"]


def test_llava_textvqa_joins_ocr_tokens_and_uses_image_id_for_llava_answers(tmp_path):
    data, _ = llava_textvqa(tmp_path)
    samples, _ = load_benchmark("textvqa", data)
    assert [s.id for s in samples] == ["34602", "34603"]
    assert samples[0].meta["ocr_tokens"] == ["dakota", "digital"]
    assert samples[1].meta["ocr_tokens"] == []
    assert samples[0].meta["llava_question_id"] == "003a8ae2ef43b901"


def test_lmms_lab_images_decode_lazily_and_splits_filter(tmp_path):
    data, _ = lmms_pope(tmp_path)
    assert detect_layout("pope", data) == "lmms_lab"
    samples, info = load_benchmark("pope", data, images=True)
    assert samples[0].image.size == (4, 4)
    assert info["per_split"] == {"adversarial": 2, "random": 2}
    random_only, _ = load_benchmark("pope", data, split="random", images=False)
    assert [s.id for s in random_only] == ["3", "4"]


def test_lmms_lab_unknown_split_lists_what_exists(tmp_path):
    data, _ = lmms_scienceqa(tmp_path)
    assert len(load_benchmark("scienceqa_img", data, split="validation")[0]) == 1
    with pytest.raises(DataError, match=r"no parquet files for split 'train'.*ScienceQA-IMG/test"):
        load_benchmark("scienceqa_img", data, split="train")


def test_bad_question_files_name_the_file(tmp_path):
    (tmp_path / "problems.json").write_text("{not json")
    with pytest.raises(DataError, match=r"problems.json:1: malformed JSON"):
        load_benchmark("scienceqa_img", tmp_path)
    pope = tmp_path / "pope" / "coco"
    pope.mkdir(parents=True)
    (pope / "coco_pope_random.json").write_text(json.dumps({"question_id": 1, "text": "q"}) + "\n")
    with pytest.raises(DataError, match=r"coco_pope_random.json:1: missing field\(s\) image, label"):
        load_benchmark("pope", tmp_path / "pope")
    with pytest.raises(DataError, match="no such directory"):
        load_benchmark("gqa", tmp_path / "absent")


def test_vqav2_without_val_annotations_explains_server_only_answers(tmp_path):
    (tmp_path / "llava_vqav2_mscoco_test-dev2015.jsonl").write_text("")
    with pytest.raises(DataError, match="EvalAI"):
        load_benchmark("vqav2", tmp_path)
