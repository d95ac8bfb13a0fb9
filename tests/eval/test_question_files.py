"""Question files made from the release files of OCRBench, AI2D, MMStar and VQAv2 val: ids,
images and the exact prompts of each protocol, and errors that name the file and record."""

import json

import pytest
from PIL import Image

from llava.eval import question_files
from tests.eval.benchmark_files import (
    AI2D_ROWS,
    AI2D_SCHEMA,
    MMSTAR_QUESTION,
    MMSTAR_ROWS,
    OCRBENCH_RECORDS,
    image_bytes,
    write_ai2d,
    write_json,
    write_mmstar,
    write_ocrbench,
    write_parquet,
    write_vqav2,
)

MC_SUFFIX = "\nAnswer with the option's letter from the given choices directly."


def read_lines(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_ocrbench_questions_are_numbered_by_position(tmp_path):
    annotation = write_ocrbench(tmp_path)
    out = question_files.main(
        ["ocrbench", "--annotation-file", str(annotation), "--out", str(tmp_path / "q.jsonl")]
    )
    lines = read_lines(out)
    # OCRBench's own ids repeat (211 twice), so the position is the question id.
    assert [line["question_id"] for line in lines] == list(range(len(OCRBENCH_RECORDS)))
    assert lines[0] == {
        "question_id": 0,
        "image": "IIIT5K/test/137_3.png",
        "text": "what is written in the image?",  # the question as given, no suffix
        "category": "Regular Text Recognition",
    }
    assert (
        lines[6]["text"] == "Please write out the expression of the formula in the image using LaTeX format."
    )


def test_ocrbench_record_without_a_question_is_named(tmp_path):
    records = [dict(r) for r in OCRBENCH_RECORDS]
    del records[3]["question"]
    path = write_json(tmp_path / "OCRBench.json", records)
    with pytest.raises(ValueError, match=r"OCRBench.json\[3\]: missing field 'question'"):
        question_files.main(["ocrbench", "--annotation-file", str(path), "--out", str(tmp_path / "q.jsonl")])
    assert not (tmp_path / "q.jsonl").exists()


def test_ai2d_prompt_letters_and_images(tmp_path):
    shards = write_ai2d(tmp_path)
    images = tmp_path / "images"
    out = tmp_path / "llava_ai2d_test.jsonl"
    # Shards given in reverse order are read in name order: the ids do not depend on the order.
    question_files.main(
        ["ai2d", "--parquet", *map(str, reversed(shards)), "--image-dir", str(images), "--out", str(out)]
    )
    lines = read_lines(out)
    assert [line["question_id"] for line in lines] == [0, 1, 2]
    assert lines[0]["text"] == "Which label shows the sun?\nA. moon\nB. sun\nC. earth\nD. star" + MC_SUFFIX
    assert lines[1]["text"] == "What does the arrow point to?\nA. leaf\nB. root\nC. stem" + MC_SUFFIX
    assert [line["answer"] for line in lines] == ["B", "C", "A"]  # option index 1, 2, 0
    # The image bytes are written as they are, under their own format's suffix.
    assert [line["image"] for line in lines] == ["0.png", "1.jpg", "2.png"]
    assert (images / "1.jpg").read_bytes() == image_bytes("blue", (11, 8), "JPEG")
    with Image.open(images / "2.png") as image:
        assert image.size == (12, 8)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({**AI2D_ROWS[0], "answer": "4"}, r"answer '4' is outside the 4 options"),
        ({**AI2D_ROWS[0], "answer": "B"}, r"answer 'B' is not an option index"),
        ({**AI2D_ROWS[0], "options": []}, r"options should be a non-empty list of text"),
    ],
)
def test_ai2d_bad_rows_name_the_file_and_row(tmp_path, row, message):
    shards = write_ai2d(tmp_path, rows=[AI2D_ROWS[1], row])
    with pytest.raises(ValueError, match=rf"test-00001-of-00002.parquet: row 0: {message}"):
        question_files.ai2d_questions(shards, tmp_path / "images")


def test_parquet_image_without_bytes_is_named(tmp_path):
    empty = {**AI2D_ROWS[0], "image": {"bytes": None, "path": "a.png"}}
    path = write_parquet(tmp_path / "test.parquet", [empty], AI2D_SCHEMA)
    with pytest.raises(ValueError, match=r"test.parquet: row 0: the image cell holds no image bytes"):
        question_files.ai2d_questions([path], tmp_path / "images")
    broken = {**AI2D_ROWS[0], "image": {"bytes": b"not an image", "path": None}}
    path = write_parquet(tmp_path / "b.parquet", [broken], AI2D_SCHEMA)
    with pytest.raises(ValueError, match=r"b.parquet: row 0: the image bytes are not a readable image"):
        question_files.ai2d_questions([path], tmp_path / "images")


def test_missing_parquet_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"absent.parquet: no such parquet file"):
        question_files.ai2d_questions([tmp_path / "absent.parquet"], tmp_path / "images")


def test_mmstar_prompt_follows_lmms_eval(tmp_path):
    parquet = write_mmstar(tmp_path)
    out = tmp_path / "llava_mmstar.jsonl"
    question_files.main(
        ["mmstar", "--parquet", str(parquet), "--image-dir", str(tmp_path / "images"), "--out", str(out)]
    )
    lines = read_lines(out)
    suffix = "\nAnswer with the option's letter from the given choices directly"  # lmms-eval's, no period
    assert lines[0] == {
        "question_id": 0,
        "image": "0.png",
        "text": MMSTAR_QUESTION + suffix,
        "answer": "A",
        "category": "coarse perception",
        "l2_category": "image emotion",
    }
    # " Please answer yes or no." is removed; the question is stripped first.
    assert lines[1]["text"] == "Is the man happy?\nOptions: A: yes, B: no" + suffix
    assert lines[2]["text"] == "How many apples are there?\nOptions: A: 1, B: 2, C: 3, D: 4" + suffix
    # The id is the row's own index, and names its image.
    assert [line["question_id"] for line in lines] == [0, 1, 2, 7]
    assert lines[3]["image"] == "7.jpg" and (tmp_path / "images" / "7.jpg").is_file()


def test_mmstar_repeated_index_is_named(tmp_path):
    parquet = write_mmstar(tmp_path, rows=[MMSTAR_ROWS[0], {**MMSTAR_ROWS[1], "index": 0}])
    with pytest.raises(ValueError, match=r"mmstar.parquet: row 1: index 0 appears twice"):
        question_files.mmstar_questions([parquet], tmp_path / "images")


def test_vqav2_val_questions(tmp_path):
    questions, _ = write_vqav2(tmp_path)
    out = question_files.main(
        ["vqav2_val", "--questions", str(questions), "--out", str(tmp_path / "q.jsonl")]
    )
    lines = read_lines(out)
    assert lines[0] == {
        "question_id": 262148000,
        "image": "COCO_val2014_000000262148.jpg",
        "text": "Is the sky blue?\nAnswer the question using a single word or phrase.",
        "category": "default",
    }
    assert lines[4]["image"] == "COCO_val2014_000000000009.jpg"
    assert len(lines) == 5


def test_vqav2_repeated_question_id_is_named(tmp_path):
    questions, _ = write_vqav2(tmp_path)
    data = json.loads(questions.read_text())
    data["questions"][3]["question_id"] = data["questions"][0]["question_id"]
    write_json(questions, data)
    with pytest.raises(ValueError, match=r"questions\[3\]: question_id 262148000 appears twice"):
        question_files.vqav2_questions(json.loads(questions.read_text()), str(questions))
