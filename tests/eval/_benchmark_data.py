"""Builders of tiny benchmark folders in the LLaVA evaluation layout and the lmms-lab parquet layout."""

from __future__ import annotations

import io
import json
from pathlib import Path

SHORT = "\nAnswer the question using a single word or phrase."


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def write_json(path: Path, value) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value), encoding="utf-8")
    return path


def llava_answers(path: Path, items: list[tuple]) -> Path:
    """A LLaVA answer file from (question_id, prompt, text) triples."""
    rows = [
        {"question_id": qid, "prompt": prompt, "text": text, "answer_id": f"a{i}", "model_id": "m", "metadata": {}}
        for i, (qid, prompt, text) in enumerate(items)
    ]
    return write_jsonl(path, rows)


def mmaccel_predictions(path: Path, items: list[tuple[str, str]]) -> Path:
    return write_jsonl(path, [{"id": i, "prediction": p} for i, p in items])


def png_bytes() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (255, 0, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


def write_parquet(path: Path, rows: list[dict]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


# ----------------------------------------------------------------------------------------------- LLaVA layout


def llava_pope(root: Path) -> tuple[Path, list[tuple]]:
    """Two splits of two questions; answers giving F1 100 (adversarial) and 66.67 (random): mean 83.33."""
    for split in ("adversarial", "random"):
        write_jsonl(
            root / "coco" / f"coco_pope_{split}.json",
            [
                {"question_id": 1, "image": "COCO_1.jpg", "text": "Is there a dog in the image?", "label": "yes"},
                {"question_id": 2, "image": "COCO_1.jpg", "text": "Is there a cat in the image?", "label": "no"},
            ],
        )  # fmt: skip
    answers = [
        (10000002, "Is there a cat in the image?" + SHORT, "Yes"),
        (1, "Is there a dog in the image?" + SHORT, "Yes"),
        (2, "Is there a cat in the image?" + SHORT, "No"),
        (10000001, "Is there a dog in the image?" + SHORT, "Yes"),
    ]
    return root, answers


def llava_mme(root: Path) -> tuple[Path, list[tuple]]:
    """existence (nested images/ layout), both right: 200; code_reasoning (flat), 1 of 2 right: 50."""
    release = root / "MME_Benchmark_release_version"
    (release / "existence" / "images").mkdir(parents=True)
    (release / "existence" / "images" / "000.jpg").write_bytes(b"")
    (release / "existence" / "questions_answers_YN").mkdir()
    (release / "existence" / "questions_answers_YN" / "000.txt").write_text(
        "Is there a dog in this image? Please answer yes or no.\tYes\n"
        "Is there a cat in this image? Please answer yes or no.\tNo\n"
    )
    (release / "code_reasoning").mkdir(parents=True)
    (release / "code_reasoning" / "0020.png").write_bytes(b"")
    (release / "code_reasoning" / "0020.txt").write_text(
        "Is a python code shown in the picture? Please answer yes or no.\tYes\n"
        "Is a c++ code shown in the picture?  Please answer yes or no.\tNo\n"
    )
    answers = [  # not in file order: the join must not depend on it
        ("code_reasoning/0020.png", "Is a c++ code shown in the picture? " + SHORT, "Yes"),
        ("existence/images/000.jpg", "Is there a cat in this image?" + SHORT, "No"),
        ("code_reasoning/0020.png", "Is a python code shown in the picture?" + SHORT, "Yes"),
        ("existence/images/000.jpg", "Is there a dog in this image?" + SHORT, "Yes"),
    ]
    return root, answers


def llava_scienceqa(root: Path) -> tuple[Path, list[tuple]]:
    """Three test problems, two with an image; one of the two answered right: 50."""
    problems = {
        "11": {"question": "What is the name of the colony shown?", "choices": ["Maryland", "New Hampshire",
               "Rhode Island", "Vermont"], "answer": 1, "hint": "", "image": "image.png", "split": "test"},
        "46": {"question": "Which property do these three objects have in common?", "choices": ["shiny",
               "slippery", "opaque"], "answer": 2, "hint": "Select the best answer.", "image": "image.png",
               "split": "test"},
        "7": {"question": "Which word is a noun?", "choices": ["run", "dog"], "answer": 1, "hint": "",
              "image": None, "split": "test"},
    }  # fmt: skip
    write_json(root / "problems.json", problems)
    write_json(root / "pid_splits.json", {"test": ["11", "46", "7"], "val": []})
    return root, [("11", "<image>\nWhat is ...", "B"), ("46", "<image>\nContext: ...", "A"), ("7", "Which", "B")]


def llava_mmbench(root: Path) -> tuple[Path, list[tuple]]:
    """Two questions with two rotations each; group 0 right in both passes, group 1 wrong once: 50."""
    root.mkdir(parents=True, exist_ok=True)
    header = "index\tquestion\thint\tA\tB\tC\tD\tanswer\tcategory\tl2-category\tsource\tcomment\tsplit\timage\n"
    rows = [
        "0\tWhat animal?\tnan\tcat\tdog\tnan\tnan\tA\tobject\tperception\ts\tnan\tdev\tnan\n",
        "1000000\tWhat animal?\tnan\tdog\tcat\tnan\tnan\tB\tobject\tperception\ts\tnan\tdev\tnan\n",
        "1\tWhat colour?\tA sunny day.\tred\tblue\tgreen\tnan\tC\tcolor\tperception\ts\tnan\tdev\tnan\n",
        "1000001\tWhat colour?\tA sunny day.\tblue\tgreen\tred\tnan\tB\tcolor\tperception\ts\tnan\tdev\tnan\n",
    ]
    (root / "mmbench_dev_20230712.tsv").write_text(header + "".join(rows), encoding="utf-8")
    return root, [(0, "p", "A"), (1000000, "p", "B"), (1, "p", "C"), (1000001, "p", "A")]


def llava_textvqa(root: Path) -> tuple[Path, list[tuple]]:
    """Two questions on one image (LLaVA question_id = image id); 1.0 and 0.0: 50."""
    write_json(root / "TextVQA_0.5.1_val.json", {"data": [
        {"question_id": 34602, "question": "what is the brand of this camera?", "image_id": "003a8ae2ef43b901",
         "answers": ["dakota"] * 10},
        {"question_id": 34603, "question": "what does the small white text spell?", "image_id": "003a8ae2ef43b901",
         "answers": ["copenhagen"] * 10},
    ]})  # fmt: skip
    write_jsonl(root / "llava_textvqa_val_v051_ocr.jsonl", [
        {"question_id": "003a8ae2ef43b901", "image": "003a8ae2ef43b901.jpg", "category": "default",
         "text": "What is the brand of this camera?\nReference OCR token: dakota, digital" + SHORT},
        {"question_id": "003a8ae2ef43b901", "image": "003a8ae2ef43b901.jpg", "category": "default",
         "text": "What does the small white text spell?\nReference OCR token: " + SHORT},
    ])  # fmt: skip
    image_id = "003a8ae2ef43b901"
    return root, [
        (image_id, "What does the small white text spell?\nReference OCR token: " + SHORT, "drupa"),
        (image_id, "What is the brand of this camera?\nReference OCR token: dakota, digital" + SHORT, "Dakota"),
    ]


def llava_gqa(root: Path) -> tuple[Path, list[tuple]]:
    write_json(root / "data" / "testdev_balanced_questions.json", {
        "201307251": {"imageId": "n161313", "question": "Is it overcast?", "answer": "no", "isBalanced": True,
                      "types": {"structural": "verify"}},
        "201640614": {"imageId": "n235859", "question": "Who is wearing the shirt?", "answer": "man",
                      "isBalanced": True, "types": {"structural": "query"}},
    })  # fmt: skip
    return root, [("201307251", "Is it overcast?" + SHORT, "No"), ("201640614", "Who?" + SHORT, "The man")]


def llava_vqav2(root: Path) -> tuple[Path, list[tuple]]:
    write_json(root / "v2_OpenEnded_mscoco_val2014_questions.json", {"questions": [
        {"image_id": 42, "question": "Is it sunny?", "question_id": 420},
        {"image_id": 42, "question": "How many dogs?", "question_id": 421},
    ]})  # fmt: skip
    write_json(root / "v2_mscoco_val2014_annotations.json", {"annotations": [
        {"question_id": 420, "image_id": 42, "answer_type": "yes/no", "question_type": "is it",
         "multiple_choice_answer": "yes", "answers": [{"answer": "yes", "answer_confidence": "yes",
                                                       "answer_id": i} for i in range(1, 11)]},
        {"question_id": 421, "image_id": 42, "answer_type": "number", "question_type": "how many",
         "multiple_choice_answer": "2", "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i}
                                                    for i, a in enumerate(["2"] * 3 + ["3"] * 7, start=1)]},
    ]})  # fmt: skip
    return root, [(420, "Is it sunny?" + SHORT, "Yes"), (421, "How many dogs?" + SHORT, "two")]  # 1.0, 0.9


LLAVA_BUILDERS = {
    "pope": (llava_pope, "mean_f1", 100 * (1 + 2 / 3) / 2),
    "mme": (llava_mme, "perception", 200.0),
    "scienceqa_img": (llava_scienceqa, "img_accuracy", 50.0),
    "mmbench": (llava_mmbench, "circular_accuracy", 50.0),
    "textvqa": (llava_textvqa, "accuracy", 50.0),
    "gqa": (llava_gqa, "accuracy", 50.0),
    "vqav2": (llava_vqav2, "accuracy", 95.0),
}

# ------------------------------------------------------------------------------------------- lmms-lab layout


def lmms_pope(root: Path) -> tuple[Path, list[tuple[str, str]]]:
    image = {"bytes": png_bytes(), "path": "x.png"}
    rows = [
        {"id": "0", "question_id": "1", "question": "Is there a dog in the image?", "answer": "yes",
         "image_source": "COCO_val2014_1", "category": "adversarial", "image": image},
        {"id": "1", "question_id": "2", "question": "Is there a cat in the image?", "answer": "no",
         "image_source": "COCO_val2014_1", "category": "adversarial", "image": image},
        {"id": "2", "question_id": "3", "question": "Is there a dog in the image?", "answer": "yes",
         "image_source": "COCO_val2014_1", "category": "random", "image": image},
        {"id": "3", "question_id": "4", "question": "Is there a cat in the image?", "answer": "no",
         "image_source": "COCO_val2014_1", "category": "random", "image": image},
    ]  # fmt: skip
    write_parquet(root / "data" / "test-00000-of-00001.parquet", rows)
    return root, [("1", "Yes"), ("2", "No"), ("3", "Yes"), ("4", "Yes")]


def lmms_mme(root: Path) -> tuple[Path, list[tuple[str, str]]]:
    rows = [
        {"question_id": "existence/000.jpg", "question": "Is there a dog? Please answer yes or no.", "answer": "Yes",
         "category": "existence"},
        {"question_id": "existence/000.jpg", "question": "Is there a cat? Please answer yes or no.", "answer": "No",
         "category": "existence"},
    ]  # fmt: skip
    write_parquet(root / "data" / "test-00000-of-00004.parquet", rows)
    return root, [("existence/000.jpg#0", "Yes"), ("existence/000.jpg#1", "Yes")]  # acc 50, acc+ 0


def lmms_scienceqa(root: Path) -> tuple[Path, list[tuple[str, str]]]:
    rows = [
        {"question": "Which?", "choices": ["a", "b"], "answer": 1, "hint": "", "image": {"bytes": png_bytes()}},
        {"question": "What?", "choices": ["a", "b", "c"], "answer": 0, "hint": "h", "image": {"bytes": png_bytes()}},
    ]
    write_parquet(root / "ScienceQA-IMG" / "test-00000-of-00001.parquet", rows)
    write_parquet(root / "ScienceQA-IMG" / "validation-00000-of-00001.parquet", rows[:1])
    return root, [("test-0", "B"), ("test-1", "B")]


def lmms_mmbench(root: Path) -> tuple[Path, list[tuple[str, str]]]:
    rows = [
        {"index": 0, "question": "What animal?", "hint": None, "A": "cat", "B": "dog", "C": None, "D": None,
         "answer": "A", "category": "object", "L2-category": "perception"},
        {"index": 1000000, "question": "What animal?", "hint": None, "A": "dog", "B": "cat", "C": None, "D": None,
         "answer": "B", "category": "object", "L2-category": "perception"},
    ]  # fmt: skip
    write_parquet(root / "en" / "dev-00000-of-00001.parquet", rows)
    return root, [("0", "A"), ("1000000", "B. cat")]


def lmms_textvqa(root: Path) -> tuple[Path, list[tuple[str, str]]]:
    rows = [{"question_id": 1, "question": "what brand?", "image_id": "abc", "answers": ["dakota"] * 10,
             "ocr_tokens": ["dakota"]}]  # fmt: skip
    write_parquet(root / "data" / "validation-00000-of-00001.parquet", rows)
    return root, [("1", "Dakota")]


def lmms_gqa(root: Path) -> tuple[Path, list[tuple[str, str]]]:
    rows = [{"id": "201307251", "imageId": "n161313", "question": "Is it overcast?", "answer": "no"},
            {"id": "201640614", "imageId": "n235859", "question": "Who?", "answer": "man"}]  # fmt: skip
    write_parquet(root / "testdev_balanced_instructions" / "testdev-00000-of-00001.parquet", rows)
    return root, [("201307251", "No"), ("201640614", "men")]


def lmms_vqav2(root: Path) -> tuple[Path, list[tuple[str, str]]]:
    answers = [{"answer": "yes", "answer_confidence": "yes", "answer_id": i} for i in range(1, 11)]
    rows = [{"question_id": 420, "question": "Is it sunny?", "answers": answers, "answer_type": "yes/no",
             "question_type": "is it", "image_id": 42}]  # fmt: skip
    write_parquet(root / "data" / "validation-00000-of-00001.parquet", rows)
    return root, [("420", "Yes.")]


LMMS_LAB_BUILDERS = {
    "pope": (lmms_pope, "mean_f1", 100 * (1 + 2 / 3) / 2),
    "mme": (lmms_mme, "perception", 50.0),
    "scienceqa_img": (lmms_scienceqa, "img_accuracy", 50.0),
    "mmbench": (lmms_mmbench, "circular_accuracy", 100.0),
    "textvqa": (lmms_textvqa, "accuracy", 100.0),
    "gqa": (lmms_gqa, "accuracy", 50.0),
    "vqav2": (lmms_vqav2, "accuracy", 100.0),
}
