"""Snapshot tests of the prompts (the text after the image, without chat template), per protocol."""

from __future__ import annotations

import pytest

from mmaccel.errors import ConfigError, DataError
from mmaccel.eval.benchmarks import Sample, get_benchmark
from mmaccel.eval.benchmarks.mmbench import vlmevalkit_generic_prompt

SHORT = "\nAnswer the question using a single word or phrase."
LETTER = "\nAnswer with the option's letter from the given choices directly."


def test_scienceqa_prompts_of_llava_ids_46_and_11():
    bench = get_benchmark("scienceqa_img")
    q46 = Sample(
        id="46",
        question="Which property do these three objects have in common?",
        answers=["2"],
        meta={"choices": ["shiny", "slippery", "opaque"], "hint": "Select the best answer."},
    )
    q11 = Sample(
        id="11",
        question="What is the name of the colony shown?",
        answers=["1"],
        meta={"choices": ["Maryland", "New Hampshire", "Rhode Island", "Vermont"], "hint": ""},
    )
    assert bench.prompt(q46, "llava") == (
        "Context: Select the best answer.\nWhich property do these three objects have in common?\n"
        "A. shiny\nB. slippery\nC. opaque\nAnswer with the option's letter from the given choices directly."
    )
    assert bench.prompt(q11, "llava") == (
        "What is the name of the colony shown?\nA. Maryland\nB. New Hampshire\nC. Rhode Island\nD. Vermont\n"
        "Answer with the option's letter from the given choices directly."
    )
    assert bench.prompt(q46, "lmms_eval") == bench.prompt(q46, "llava")
    assert bench.prompt(q46, "vlmevalkit") == (
        "Select the best answer.\nWhich property do these three objects have in common?\n"
        "A. shiny\nB. slippery\nC. opaque" + LETTER
    )


@pytest.mark.parametrize(
    ("benchmark", "question"),
    [("gqa", "Is it overcast?"), ("pope", "Is there a dog in the image?"), ("vqav2", "What color is the bus?")],
)
def test_short_answer_prompts(benchmark, question):
    sample = Sample(id="1", question=question, answers=["yes"])
    assert get_benchmark(benchmark).prompt(sample, "llava") == question + SHORT


def test_pope_vlmevalkit_prompt_is_the_raw_question():
    sample = Sample(id="1", question="Is there a dog in the image?", answers=["yes"])
    assert get_benchmark("pope").prompt(sample, "vlmevalkit") == "Is there a dog in the image?"


def test_mme_prompts_replace_the_yes_no_suffix():
    bench = get_benchmark("mme")
    single = Sample(id="a", question="Is a python code shown in the picture? Please answer yes or no.")
    double = Sample(id="b", question="Is a c++ code shown in the picture?  Please answer yes or no.")
    assert bench.prompt(single, "llava") == "Is a python code shown in the picture?" + SHORT
    assert bench.prompt(double, "llava") == "Is a c++ code shown in the picture? " + SHORT
    assert bench.prompt(single, "lmms_eval") == bench.prompt(single, "llava")
    assert bench.prompt(single, "vlmevalkit") == "Is a python code shown in the picture? Please answer yes or no."


def test_textvqa_prompts_with_and_without_ocr():
    bench = get_benchmark("textvqa")
    sample = Sample(
        id="1", question="what is the brand of this NBA camera?", meta={"ocr_tokens": ["dakota", "digital"]}
    )
    assert bench.prompt(sample, "llava") == (
        "What is the brand of this nba camera?\nReference OCR token: dakota, digital" + SHORT
    )
    assert bench.prompt(sample, "lmms_eval") == "What is the brand of this nba camera?" + SHORT
    assert bench.prompt(sample, "vlmevalkit") == "what is the brand of this NBA camera?" + SHORT
    empty = Sample(id="2", question="what?", meta={"ocr_tokens": []})
    assert bench.prompt(empty, "llava") == "What?\nReference OCR token: " + SHORT
    with pytest.raises(DataError, match="no OCR tokens"):
        bench.prompt(Sample(id="3", question="what?", meta={"ocr_tokens": None}), "llava")


def _mmbench(hint: str | None, lang: str = "en") -> Sample:
    return Sample(
        id="0",
        question="What animal is this?",
        answers=["B"],
        meta={"index": 0, "options": {"A": "cat", "B": "dog"}, "hint": hint, "lang": lang},
    )


def test_mmbench_prompts_per_protocol():
    bench = get_benchmark("mmbench")
    assert bench.prompt(_mmbench("A photo."), "llava") == "A photo.\nWhat animal is this?\nA. cat\nB. dog" + LETTER
    assert bench.prompt(_mmbench(None), "llava") == "What animal is this?\nA. cat\nB. dog" + LETTER
    assert bench.prompt(_mmbench(None, "cn"), "llava") == "What animal is this?\nA. cat\nB. dog\n请直接回答选项字母。"
    assert bench.prompt(_mmbench("A photo."), "lmms_eval") == (
        "A photo. What animal is this? There are several options:\nA. cat\nB. dog" + LETTER
    )
    assert bench.prompt(_mmbench(None), "lmms_eval") == (
        "What animal is this? There are several options:\nA. cat\nB. dog" + LETTER
    )
    assert bench.prompt(_mmbench("A photo."), "vlmevalkit") == bench.prompt(_mmbench("A photo."), "llava")
    assert vlmevalkit_generic_prompt(_mmbench("A photo.")) == (
        "Hint: A photo.\nQuestion: What animal is this?\nOptions:\nA. cat\nB. dog\n"
        "Please select the correct answer from the options above. \n"
    )


def test_unknown_protocol_is_a_config_error():
    with pytest.raises(ConfigError, match="choose one of llava, lmms_eval, vlmevalkit"):
        get_benchmark("gqa").prompt(Sample(id="1", question="q"), "lava")
