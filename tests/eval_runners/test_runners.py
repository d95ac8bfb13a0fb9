"""The answer runners end to end on a tiny checkpoint: answer-file format per runner, chunking,
resume after an interruption, the run record and the refusal to mix runs, batch-size
equivalence, and the missing-image policy."""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import logging
import shutil
from pathlib import Path

import pytest
from PIL import Image
from safetensors.torch import load_file, save_file

from llava.eval import (
    converters,
    eval_exact_match,
    eval_mmbench,
    eval_textvqa,
    model_vqa,
    model_vqa_loader,
    model_vqa_mmbench,
    model_vqa_science,
    run_record,
)
from llava.eval.benchmarks import merge_chunks
from llava.eval.runner import DecodingSettings, get_chunk, prepare_answers_file, short_id
from llava.mm_utils import ImageTooLargeError
from llava.model.fingerprint import location_fingerprint

SHORT_SUFFIX = "\nAnswer the question using a single word or phrase."
MC_SUFFIX = "\nAnswer with the option's letter from the given choices directly."
ANSWER_FIELDS = ["question_id", "prompt", "text", "answer_id", "model_id", "metadata"]
QUESTIONS = [
    "What is in the image?",
    "Is there a red circle?",
    "How many squares are there? Describe the picture in detail.",
]


def vqa_questions(n: int = 7) -> list[dict]:
    """LLaVA-style short-answer questions (suffix inside `text`), prompts of different lengths,
    each question asked about several images; ids mix ints and strings as real question files do
    (GQA's are strings)."""
    return [
        {
            "question_id": i if i % 3 else f"q{i}",
            "image": f"img{i % 4}.png",
            "text": QUESTIONS[i % 3] + SHORT_SUFFIX,
            "category": "default",
        }
        for i in range(n)
    ]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    text = Path(path).read_text(encoding="utf-8")
    assert text == "" or text.endswith("\n"), f"{path} does not end with a newline"
    return [json.loads(line) for line in text.splitlines()]


def runner_args(
    model_path: str, questions: Path, answers: Path, images: Path | None, *extra: str
) -> list[str]:
    args = ["--model-path", model_path, "--question-file", str(questions), "--answers-file", str(answers)]
    if images is not None:
        args += ["--image-folder", str(images)]
    return [*args, "--max_new_tokens", "5", *extra]


def comparable(records: list[dict]) -> list[tuple]:
    """Everything an answer line holds except its random `answer_id`."""
    return [tuple((k, json.dumps(v)) for k, v in r.items() if k != "answer_id") for r in records]


@pytest.fixture(scope="module")
def question_file(tmp_path_factory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("questions") / "questions.jsonl", vqa_questions())


@pytest.fixture(scope="module")
def reference_file(tiny_model_path, question_file, image_folder, tmp_path_factory) -> Path:
    """The loader, unchunked, batch size 1, greedy: what the other runs must reproduce."""
    answers = tmp_path_factory.mktemp("reference") / "answers.jsonl"
    summary = model_vqa_loader.main(runner_args(tiny_model_path, question_file, answers, image_folder))
    assert (summary.total, summary.answered, summary.resumed) == (7, 7, 0)
    return answers


@pytest.fixture(scope="module")
def reference(reference_file) -> list[dict]:
    return read_jsonl(reference_file)


def check_answer_lines(records: list[dict], prompts: list[str], ids: list) -> None:
    assert [r["question_id"] for r in records] == ids
    assert [r["prompt"] for r in records] == prompts
    for r in records:
        assert list(r)[:3] == ANSWER_FIELDS[:3] and list(r)[-3:] == ANSWER_FIELDS[-3:]
        assert isinstance(r["text"], str) and r["text"] == r["text"].strip()
        assert isinstance(r["answer_id"], str) and len(r["answer_id"]) == 22
        assert r["model_id"] == "tiny-fusion"
        assert r["metadata"] == {}
    assert len({r["answer_id"] for r in records}) == len(records)


def test_loader_answer_file_format(reference):
    questions = vqa_questions()
    check_answer_lines(reference, [q["text"] for q in questions], [q["question_id"] for q in questions])
    assert all(list(r) == ANSWER_FIELDS for r in reference)
    assert isinstance(reference[0]["question_id"], str) and isinstance(reference[1]["question_id"], int)
    # The images matter: the same question about different images is answered differently.
    by_image = {
        q["image"]: r["text"]
        for q, r in zip(vqa_questions(), reference, strict=True)
        if q["text"] == questions[0]["text"]
    }
    assert len(set(by_image.values())) > 1


def test_runner_defaults_follow_the_protocol():
    required = ["--model-path", "m", "--question-file", "q", "--answers-file", "a"]
    expected = {model_vqa_loader: 128, model_vqa: 1024, model_vqa_science: 1024, model_vqa_mmbench: 1024}
    for module, tokens in expected.items():
        args = module.TASK.build_parser().parse_args(required)
        assert (args.max_new_tokens, args.temperature, args.num_beams, args.top_p) == (tokens, 0.0, 1, None)
        assert (args.conv_mode, args.num_chunks, args.chunk_idx, args.batch_size) == ("vicuna_v1", 1, 0, 1)
    mmbench = model_vqa_mmbench.TASK.build_parser().parse_args([*required, "--lang", "cn", "--all-rounds"])
    assert mmbench.lang == "cn" and mmbench.all_rounds


def test_freeform_runner_format(tiny_model_path, image_folder, tmp_path):
    questions = [
        {
            "question_id": 0,
            "image": "img1.png",
            "text": "Describe the picture in detail.",
            "category": "detail",
        },
        {"question_id": 1, "image": "img2.png", "text": "What is in the image?", "category": "conv"},
    ]
    answers = tmp_path / "answers.jsonl"
    model_vqa.main(
        runner_args(tiny_model_path, write_jsonl(tmp_path / "q.jsonl", questions), answers, image_folder)
    )
    records = read_jsonl(answers)
    check_answer_lines(records, [q["text"] for q in questions], [0, 1])


def test_science_qa_format_and_batching(tiny_model_path, image_folder, tmp_path):
    items = [
        {
            "id": "4",
            "image": "img0.png",
            "conversations": [
                {
                    "from": "human",
                    "value": "<image>\nContext: A red circle.\nIs there a red circle?\nA. yes\nB. no",
                },
                {"from": "gpt", "value": "A"},
            ],
        },
        {
            "id": "7",
            "conversations": [
                {"from": "human", "value": "How many squares are there?\nA. one\nB. two\nC. three"},
                {"from": "gpt", "value": "B"},
            ],
        },
        {
            "id": "9",
            "image": "img3.png",
            "conversations": [
                {"from": "human", "value": "Which colour is it?\nA. red\nB. blue"},
                {"from": "gpt", "value": "B"},
            ],
        },
    ]
    questions = tmp_path / "llava_test_CQM-A.json"
    questions.write_text(json.dumps(items), encoding="utf-8")
    single, batched = tmp_path / "b1.jsonl", tmp_path / "b3.jsonl"
    base = runner_args(tiny_model_path, questions, single, image_folder, "--single-pred-prompt")
    model_vqa_science.main(base)
    model_vqa_science.main(
        [
            *runner_args(tiny_model_path, questions, batched, image_folder),
            "--single-pred-prompt",
            "--batch-size",
            "3",
        ]
    )
    records = read_jsonl(single)
    check_answer_lines(
        records,
        [
            "<image>\nContext: A red circle.\nIs there a red circle?\nA. yes\nB. no" + MC_SUFFIX,
            "How many squares are there?\nA. one\nB. two\nC. three" + MC_SUFFIX,
            "<image>\nWhich colour is it?\nA. red\nB. blue" + MC_SUFFIX,
        ],
        ["4", "7", "9"],
    )
    # A batch mixing text-only and image questions answers like batch size 1.
    assert comparable(read_jsonl(batched)) == comparable(records)


def mmbench_tsv(path: Path) -> Path:
    """A tiny MMBench TSV in the real layout: base64 PNGs, hint, options A-D with empties."""
    columns = [
        "index",
        "question",
        "hint",
        "A",
        "B",
        "C",
        "D",
        "answer",
        "category",
        "image",
        "source",
        "l2-category",
        "comment",
        "split",
    ]
    rows = []
    for index, hint, options, colour in (
        (0, "A picture of shapes.", ["red", "green", "blue", "yellow"], "red"),
        (1, "nan", ["circle", "square", "", ""], "blue"),
        (1000001, "", ["green", "red", "triangle", ""], "green"),
    ):
        buffer = io.BytesIO()
        Image.new("RGB", (40, 28), colour).save(buffer, format="PNG")
        image = base64.b64encode(buffer.getvalue()).decode()
        rows.append(
            [
                str(index),
                "What colour is the image?",
                hint,
                *options,
                "A",
                "attribute",
                image,
                "x",
                "y",
                "",
                "dev",
            ]
        )
    path.write_text("\n".join("\t".join(row) for row in [columns, *rows]) + "\n", encoding="utf-8")
    return path


def test_mmbench_format_all_rounds_and_resume_key(tiny_model_path, tmp_path):
    questions = mmbench_tsv(tmp_path / "mmbench_dev.tsv")
    answers = tmp_path / "answers.jsonl"
    args = runner_args(
        tiny_model_path, questions, answers, None, "--single-pred-prompt", "--all-rounds", "--batch-size", "4"
    )
    summary = model_vqa_mmbench.main(args)
    assert (summary.total, summary.answered) == (4 + 2 + 3, 9)
    records = read_jsonl(answers)
    assert [(r["question_id"], r["round_id"]) for r in records] == [
        (0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1), (1000001, 0), (1000001, 1), (1000001, 2),
    ]  # fmt: skip
    question = "What colour is the image?"
    assert records[0]["prompt"] == f"A picture of shapes.\n{question}\nA. red\nB. green\nC. blue\nD. yellow"
    assert records[1]["prompt"] == f"A picture of shapes.\n{question}\nA. green\nB. blue\nC. yellow\nD. red"
    assert records[1]["options"] == ["green", "blue", "yellow", "red"]
    assert records[1]["option_char"] == ["B", "C", "D", "A"]
    assert records[4]["prompt"] == f"{question}\nA. circle\nB. square"  # "nan" hint dropped, 2 options
    assert records[8]["prompt"] == f"{question}\nA. triangle\nB. green\nC. red"
    for r in records:
        assert list(r) == [
            "question_id",
            "prompt",
            "text",
            "round_id",
            "options",
            "option_char",
            "answer_id",
            "model_id",
            "metadata",
        ]
        assert r["model_id"] == "tiny-fusion" and r["metadata"] == {}
    # Resuming is keyed by (question_id, round_id): a run that lost its last rounds redoes only those.
    lines = answers.read_text(encoding="utf-8").splitlines(keepends=True)
    answers.write_text("".join(lines[:7]), encoding="utf-8")
    summary = model_vqa_mmbench.main(args)
    assert (summary.resumed, summary.answered) == (7, 2)
    assert comparable(read_jsonl(answers)) == comparable(records)
    # The scorer reads the rounds from the run record and agrees with the runner's rotations.
    scores = eval_mmbench.main(["--annotation-file", str(questions), "--result-file", str(answers)])
    assert scores.coverage.complete and scores.coverage.expected == 9 and scores.num_questions == 2
    # The TSV already holds a rotated copy (1000001): rounds on top of it have no sheet layout.
    with pytest.raises(ValueError, match="already holds rotated copies"):
        converters.mmbench_main(["--annotation-file", str(questions), "--result-dir", str(tmp_path),
                                 "--upload-dir", str(tmp_path / "up"), "--experiment", "answers"])  # fmt: skip


def test_mmbench_model_input_suffix_by_language(tmp_path):
    from llava.eval.eval_mmbench import read_mmbench_tsv

    row = read_mmbench_tsv(mmbench_tsv(tmp_path / "mmbench.tsv"))[1]
    for lang, suffix in (("en", MC_SUFFIX), ("cn", "\n请直接回答选项字母。")):
        args = argparse.Namespace(
            question_file="mmbench.tsv", lang=lang, all_rounds=False, single_pred_prompt=True
        )
        (sample,) = model_vqa_mmbench.mmbench_samples(row, args)
        assert sample.query == "<image>\nWhat colour is the image?\nA. circle\nB. square" + suffix
        assert sample.prompt == "What colour is the image?\nA. circle\nB. square"
        assert sample.images[0].load().size == (40, 28)
    row["image"] = ""
    (sample,) = model_vqa_mmbench.mmbench_samples(row, args)
    with pytest.raises(FileNotFoundError, match="mmbench.tsv index 1: no image"):
        sample.images[0].load()


def test_get_chunk_sizes():
    items = list(range(7))
    assert [get_chunk(items, 3, i) for i in range(3)] == [[0, 1, 2], [3, 4, 5], [6]]
    assert [get_chunk([0, 1], 3, i) for i in range(3)] == [[0], [1], []]
    with pytest.raises(ValueError, match="chunk-idx"):
        get_chunk(items, 3, 3)


def test_chunks_merged_in_order_equal_an_unchunked_run(
    reference, tiny_model_path, question_file, image_folder, tmp_path
):
    for i in range(3):
        answers = tmp_path / f"3_{i}.jsonl"
        model_vqa_loader.main(
            runner_args(
                tiny_model_path,
                question_file,
                answers,
                image_folder,
                "--num-chunks",
                "3",
                "--chunk-idx",
                str(i),
            )
        )
    assert [len(read_jsonl(tmp_path / f"3_{i}.jsonl")) for i in range(3)] == [3, 3, 1]
    assert comparable(read_jsonl(merge_chunks(tmp_path, 3))) == comparable(reference)
    merged = run_record.read_record(tmp_path / "merge.jsonl")
    assert merged["chunk"] == {"num_chunks": 3, "merged_from": ["3_0.jsonl", "3_1.jsonl", "3_2.jsonl"]}
    assert merged["question_file"] == run_record.read_record(tmp_path / "3_1.jsonl")["question_file"]


def test_batch_size_three_gives_the_greedy_answers_of_batch_size_one(
    reference, tiny_model_path, question_file, image_folder, tmp_path
):
    answers = tmp_path / "answers.jsonl"
    model_vqa_loader.main(
        runner_args(tiny_model_path, question_file, answers, image_folder, "--batch-size", "3")
    )
    assert comparable(read_jsonl(answers)) == comparable(reference)


def test_dtype_flag_runs_the_model_in_bfloat16(
    tiny_model_path, question_file, image_folder, tmp_path, caplog
):
    answers = tmp_path / "answers.jsonl"
    with caplog.at_level(logging.INFO, logger="llava.inference.engine"):
        summary = model_vqa_loader.main(
            runner_args(tiny_model_path, question_file, answers, image_folder, "--dtype", "bfloat16")
        )
    assert (summary.total, summary.answered) == (7, 7)
    assert "on cpu, torch.bfloat16" in caplog.text
    assert json.loads(run_record.record_path(answers).read_text())["dtype"] == "bfloat16"
    assert all(isinstance(r["text"], str) for r in read_jsonl(answers))


def test_resume_after_an_interruption(
    reference, reference_file, tiny_model_path, question_file, image_folder, tmp_path, caplog, capfd
):
    answers = tmp_path / "answers.jsonl"
    complete = "".join(json.dumps(r) + "\n" for r in reference[:3])
    partial = json.dumps(reference[3])[:25]  # the process died while writing the 4th line
    answers.write_text(complete + partial, encoding="utf-8")
    shutil.copy(run_record.record_path(reference_file), run_record.record_path(answers))
    with caplog.at_level(logging.WARNING, logger="llava.eval.runner"):
        summary = model_vqa_loader.main(runner_args(tiny_model_path, question_file, answers, image_folder))
    assert "partial last line" in caplog.text
    assert (summary.resumed, summary.answered) == (3, 4)
    records = read_jsonl(answers)
    assert comparable(records) == comparable(reference)
    assert [r["answer_id"] for r in records[:3]] == [
        r["answer_id"] for r in reference[:3]
    ]  # kept, not redone
    # Everything answered: nothing to do, and the model is not even loaded.
    capfd.readouterr()
    summary = model_vqa_loader.main(runner_args(tiny_model_path, question_file, answers, image_folder))
    assert (summary.resumed, summary.answered) == (7, 0)
    assert "Loading weights" not in capfd.readouterr().err


def test_answers_file_errors_name_the_file(tmp_path):
    answers = tmp_path / "answers.jsonl"
    good = json.dumps({"question_id": 1, "text": "a", "model_id": "m"})
    answers.write_text(good + "\n{broken\n" + good.replace("1", "2") + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"answers.jsonl:2: not valid JSON"):
        prepare_answers_file(answers, "m")
    answers.write_text(good + "\n[1, 2]\n" + good, encoding="utf-8")
    with pytest.raises(ValueError, match=r"answers.jsonl:2: not an answer"):
        prepare_answers_file(answers, "m")
    answers.write_text(good + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"answers.jsonl:1: answer of model 'm', but this run is 'other'"):
        prepare_answers_file(answers, "other")
    assert prepare_answers_file(answers, "other", overwrite=True) == {}
    assert answers.read_text() == ""
    answers.write_text(good, encoding="utf-8")  # complete last line without its newline
    assert prepare_answers_file(answers, "m") == {(1, None, None): 1}  # (question_id, round_id, prompt)
    assert answers.read_text() == good + "\n"


def test_missing_image_is_an_error_naming_it(tiny_model_path, image_folder, tmp_path):
    questions = vqa_questions(3)
    questions[1]["image"] = "nowhere/lost.png"
    q_file = write_jsonl(tmp_path / "q.jsonl", questions)
    with pytest.raises(FileNotFoundError, match=r"question 1: image file not found: .*nowhere/lost\.png"):
        model_vqa_loader.main(runner_args(tiny_model_path, q_file, tmp_path / "a.jsonl", image_folder))


def test_missing_image_skipped_and_counted_under_the_flag(tiny_model_path, image_folder, tmp_path, caplog):
    questions = vqa_questions(4)
    questions[2]["image"] = "lost.png"
    q_file = write_jsonl(tmp_path / "q.jsonl", questions)
    answers = tmp_path / "a.jsonl"
    with caplog.at_level(logging.WARNING, logger="llava.eval.runner"):
        summary = model_vqa_loader.main(
            runner_args(
                tiny_model_path, q_file, answers, image_folder, "--skip-missing-images", "--batch-size", "2"
            )
        )
    assert summary.skipped_missing_images == [2]
    assert summary.answered == 3
    assert [r["question_id"] for r in read_jsonl(answers)] == ["q0", 1, "q3"]
    assert "skipped 1 question(s) with missing images: [2]" in caplog.text
    assert "lost.png" in caplog.text


TEXTVQA_SUFFIX = "\nReference OCR token: Canon, EOS\nAnswer the question using a single word or phrase."


def test_textvqa_repeated_question_lines_are_each_answered_resumed_and_scored(
    tiny_model_path, image_folder, tmp_path
):
    """TextVQA asks a few questions twice about one image (two annotations with the same image id
    and question, other answers); LLaVA's `llava_textvqa_val_v051_ocr.jsonl` then holds the same
    line twice (`question_id` is the image id, the prompt identical) and its runner answers each
    line. The runner answers both, resumes per line, and the scorer wants both."""
    line = {"question_id": "003a8ae2ef43b901", "image": "img0.png", "text": "what brand?" + TEXTVQA_SUFFIX}
    other = {"question_id": "00c5f5b2a6b2ad64", "image": "img1.png", "text": "what year?" + TEXTVQA_SUFFIX}
    q_file = write_jsonl(tmp_path / "llava_textvqa_val_v051_ocr.jsonl", [line, other, line])
    annotations = {
        "data": [
            {
                "image_id": "003a8ae2ef43b901",
                "question_id": 1,
                "question": "What brand?",
                "answers": ["canon"] * 10,
            },
            {
                "image_id": "00c5f5b2a6b2ad64",
                "question_id": 2,
                "question": "what year?",
                "answers": ["1990"] * 10,
            },
            {
                "image_id": "003a8ae2ef43b901",
                "question_id": 3,
                "question": "what brand?",
                "answers": ["eos"] * 10,
            },
        ]
    }
    ann_file = tmp_path / "TextVQA_0.5.1_val.json"
    ann_file.write_text(json.dumps(annotations), encoding="utf-8")
    answers = tmp_path / "answers.jsonl"
    args = runner_args(tiny_model_path, q_file, answers, image_folder)
    assert model_vqa_loader.main(args).answered == 3
    full = read_jsonl(answers)
    assert [r["question_id"] for r in full] == ["003a8ae2ef43b901", "00c5f5b2a6b2ad64", "003a8ae2ef43b901"]
    # Killed after the first line: the repeated line is still to do (a key per line, not per pair).
    answers.write_text(json.dumps(full[0]) + "\n", encoding="utf-8")
    summary = model_vqa_loader.main(args)
    assert (summary.resumed, summary.answered) == (1, 2)
    assert comparable(read_jsonl(answers)) == comparable(full)
    assert model_vqa_loader.main(args).answered == 0
    score = [
        "--annotation-file",
        str(ann_file),
        "--result-file",
        str(answers),
        "--question-file",
        str(q_file),
    ]
    eval_textvqa.main(score)
    # One answer of the repeated question lost: the scorer names it as missing.
    answers.write_text("".join(json.dumps(r) + "\n" for r in full[:2]), encoding="utf-8")
    with pytest.raises(ValueError, match=r"2 of 3 expected question\(s\) answered; 1 missing"):
        eval_textvqa.main(score)


def oversized_image_questions(tmp_path: Path, monkeypatch) -> tuple[Path, Path]:
    """Three questions whose second image is over Pillow's decompression-bomb limit (lowered)."""
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (12, 10), "red").save(images / "small.png")
    Image.new("RGB", (60, 60), "blue").save(images / "huge.png")  # 3600 px > 2 x 500
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)
    questions = vqa_questions(3)
    for q in questions:
        q["image"] = "small.png"
    questions[1]["image"] = "huge.png"
    return write_jsonl(tmp_path / "q.jsonl", questions), images


def test_oversized_image_is_an_error_naming_the_question(tiny_model_path, tmp_path, monkeypatch):
    q_file, images = oversized_image_questions(tmp_path, monkeypatch)
    with pytest.raises(
        ImageTooLargeError, match=r"question 1: image .*huge\.png refused as a possible decompression bomb"
    ):
        model_vqa_loader.main(runner_args(tiny_model_path, q_file, tmp_path / "a.jsonl", images))


def test_oversized_image_skipped_and_counted_as_unreadable_under_the_flag(
    tiny_model_path, tmp_path, monkeypatch, caplog
):
    q_file, images = oversized_image_questions(tmp_path, monkeypatch)
    answers = tmp_path / "a.jsonl"
    with caplog.at_level(logging.WARNING, logger="llava.eval.runner"):
        summary = model_vqa_loader.main(
            runner_args(tiny_model_path, q_file, answers, images, "--skip-missing-images")
        )
    assert summary.skipped_unreadable_images == [1] and summary.skipped_missing_images == []
    assert [r["question_id"] for r in read_jsonl(answers)] == ["q0", 2]
    assert "skipped 1 question(s) with unreadable (oversized) images: [1]" in caplog.text


def test_mme_style_two_questions_per_image_id_are_both_answered_and_resumed(
    tiny_model_path, image_folder, tmp_path
):
    suffix = " Please answer yes or no."
    questions = [
        {"question_id": "existence/img0.png", "image": "img0.png", "text": "Is there a red circle?" + suffix},
        {
            "question_id": "existence/img0.png",
            "image": "img0.png",
            "text": "Is there a blue square?" + suffix,
        },
    ]
    q_file = write_jsonl(tmp_path / "q.jsonl", questions)
    answers = tmp_path / "a.jsonl"
    args = ["--model-path", tiny_model_path, "--question-file", str(q_file), "--image-folder", str(image_folder),
            "--answers-file", str(answers), "--max_new_tokens", "3"]  # fmt: skip
    assert model_vqa_loader.main(args).answered == 2
    lines = read_jsonl(answers)
    assert [r["question_id"] for r in lines] == ["existence/img0.png"] * 2
    assert [r["prompt"] for r in lines] == [q["text"] for q in questions]
    rerun = model_vqa_loader.main(args)
    assert rerun.answered == 0 and rerun.resumed == 2


def test_question_file_errors_name_the_line(tmp_path):
    q_file = tmp_path / "q.jsonl"
    q_file.write_text(json.dumps({"question_id": 1, "text": "x"}) + "\n", encoding="utf-8")
    args = ["--model-path", "m", "--question-file", str(q_file), "--answers-file", str(tmp_path / "a.jsonl")]
    with pytest.raises(ValueError, match=r"q.jsonl:1: question lacks \['image'\]"):
        model_vqa_loader.main(args)


def test_decoding_settings():
    greedy = DecodingSettings(temperature=0, max_new_tokens=7).generate_kwargs()
    assert greedy["do_sample"] is False and greedy["num_beams"] == 1 and greedy["max_new_tokens"] == 7
    assert greedy["temperature"] is None and greedy["top_p"] is None
    sampled = DecodingSettings(temperature=0.2, top_p=0.9, num_beams=2).generate_kwargs()
    assert (sampled["do_sample"], sampled["temperature"], sampled["top_p"], sampled["num_beams"]) == (
        True,
        0.2,
        0.9,
        2,
    )
    with pytest.raises(ValueError, match="num_beams"):
        DecodingSettings(num_beams=0)


def test_short_ids_are_unique_and_shortuuid_shaped():
    ids = {short_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) == 22 and i.isalnum() and not set(i) & set("01IOl") for i in ids)


def test_run_record_beside_the_answers(tiny_model_path, reference_file, question_file, image_folder):
    record = json.loads(run_record.record_path(reference_file).read_text())
    assert record["runner"] == "llava.eval.model_vqa_loader" and record["model_id"] == "tiny-fusion"
    assert record["model_path"] == tiny_model_path and record["model_base"] is None
    assert record["conv_mode"] == "vicuna_v1" and record["prompt"] == {"single_pred_prompt": False}
    assert record["dtype"] == "auto"
    assert record["decoding"] == {"temperature": 0.0, "top_p": None, "num_beams": 1, "max_new_tokens": 5}
    assert record["question_file"] == {
        "path": str(question_file),
        "sha256": hashlib.sha256(question_file.read_bytes()).hexdigest(),
    }
    assert record["image_folder"] == str(image_folder)
    assert record["fingerprints"] == {
        "model_path": location_fingerprint(tiny_model_path),
        "model_base": None,
        "image_folder": run_record.image_files_fingerprint(
            image_folder, [image_folder / q["image"] for q in vqa_questions()]
        ),
    }
    assert record["chunk"] == {"num_chunks": 1, "chunk_idx": 0}


def retrain_in_place(checkpoint: Path) -> None:
    """Every weight of the checkpoint changed, under the same folder and file names."""
    for weights in checkpoint.glob("*.safetensors"):
        tensors = load_file(weights)
        save_file({name: t * 1.5 if t.is_floating_point() else t for name, t in tensors.items()}, weights,
                  metadata={"format": "pt"})  # fmt: skip


def test_resume_refuses_a_checkpoint_retrained_in_place(
    reference, reference_file, tiny_model_path, question_file, image_folder, tmp_path
):
    checkpoint = Path(shutil.copytree(tiny_model_path, tmp_path / "tiny-fusion"))
    answers = tmp_path / "answers.jsonl"
    args = runner_args(str(checkpoint), question_file, answers, image_folder)
    model_vqa_loader.main(args)
    answers.write_text("".join(json.dumps(r) + "\n" for r in read_jsonl(answers)[:3]), encoding="utf-8")
    before = answers.read_bytes()
    retrain_in_place(checkpoint)
    expected = (
        r"fingerprints.model_path: 'sha256:\w+' in the file, 'sha256:\w+' now "
        rf"\(other content: '{checkpoint}' then, '{checkpoint}' now\)"
    )
    with pytest.raises(ValueError, match=expected):
        model_vqa_loader.main(args)
    assert answers.read_bytes() == before  # nothing added: no answers of two models in one file


def test_moved_checkpoint_and_image_folder_resume(
    reference, reference_file, tiny_model_path, question_file, image_folder, tmp_path
):
    checkpoint = Path(shutil.copytree(tiny_model_path, tmp_path / "old" / "tiny-fusion"))
    images = Path(shutil.copytree(image_folder, tmp_path / "old-images"))
    answers = tmp_path / "answers.jsonl"
    model_vqa_loader.main(runner_args(str(checkpoint), question_file, answers, images))
    answers.write_text("".join(json.dumps(r) + "\n" for r in read_jsonl(answers)[:3]), encoding="utf-8")
    (tmp_path / "new").mkdir()
    moved = checkpoint.rename(tmp_path / "new" / "tiny-fusion")
    moved_images = images.rename(tmp_path / "new-images")
    summary = model_vqa_loader.main(runner_args(str(moved), question_file, answers, moved_images))
    assert (summary.resumed, summary.answered) == (3, 4)
    assert comparable(read_jsonl(answers)) == comparable(reference)
    # Files the questions do not read (say, answers written under the data folder) do not count.
    (moved_images / "answers").mkdir()
    (moved_images / "answers" / "other.jsonl").write_text("{}\n", encoding="utf-8")
    assert model_vqa_loader.main(runner_args(str(moved), question_file, answers, moved_images)).resumed == 7
    # Another image under a name the questions read is other content: refused.
    (moved_images / "img0.png").write_bytes((moved_images / "img1.png").read_bytes() + b"x")
    with pytest.raises(ValueError, match=r"fingerprints.image_folder: .* \(other content: .*new-images"):
        model_vqa_loader.main(runner_args(str(moved), question_file, answers, moved_images))


@pytest.mark.parametrize(
    ("flags", "setting", "before", "after"),
    [
        (["--temperature", "0.5"], "decoding.temperature", "0.0", "0.5"),
        (["--conv-mode", "plain"], "conv_mode", "'vicuna_v1'", "'plain'"),
        (["--dtype", "bfloat16"], "dtype", "'auto'", "'bfloat16'"),
        (["--max_new_tokens", "9"], "decoding.max_new_tokens", "5", "9"),
        (["--single-pred-prompt"], "prompt.single_pred_prompt", "False", "True"),
        (["--num-chunks", "2"], "chunk.num_chunks", "1", "2"),
    ],
)
def test_resume_refuses_another_run(
    reference_file, tiny_model_path, question_file, image_folder, tmp_path, flags, setting, before, after
):
    answers = tmp_path / "answers.jsonl"
    shutil.copy(reference_file, answers)
    shutil.copy(run_record.record_path(reference_file), run_record.record_path(answers))
    expected = f"{setting}: {before} in the file, {after} now\n.*pass --overwrite .* another --answers-file"
    with pytest.raises(ValueError, match=expected):
        model_vqa_loader.main([*runner_args(tiny_model_path, question_file, answers, image_folder), *flags])
    assert answers.read_bytes() == reference_file.read_bytes()  # nothing added, nothing lost


def test_resume_refuses_another_model(reference_file, tiny_model_path, question_file, image_folder, tmp_path):
    answers = tmp_path / "answers.jsonl"
    shutil.copy(reference_file, answers)
    shutil.copy(run_record.record_path(reference_file), run_record.record_path(answers))
    other = shutil.copytree(tiny_model_path, tmp_path / "other-fusion")
    retrain_in_place(other)
    with pytest.raises(
        ValueError, match=r"fingerprints.model_path: .*'.*tiny-fusion' then, '.*other-fusion' now"
    ):
        model_vqa_loader.main(runner_args(str(other), question_file, answers, image_folder))
    # --overwrite starts afresh, with the new run's record
    summary = model_vqa_loader.main(
        [*runner_args(str(other), question_file, answers, image_folder), "--overwrite"]
    )
    assert (summary.resumed, summary.answered) == (0, 7)
    assert run_record.read_record(answers)["model_path"] == str(other)


def test_answers_without_a_record_are_not_resumed(
    reference_file, tiny_model_path, question_file, image_folder, tmp_path
):
    answers = tmp_path / "answers.jsonl"
    shutil.copy(reference_file, answers)  # e.g. written by LLaVA's own runner
    with pytest.raises(
        ValueError, match=r"holds 7 answer\(s\) but no run record \(answers.jsonl.meta.json\)"
    ):
        model_vqa_loader.main(runner_args(tiny_model_path, question_file, answers, image_folder))


def test_scorer_accepts_its_own_question_file_and_refuses_another(tiny_model_path, image_folder, tmp_path):
    questions = [{**q, "answer": "red"} for q in vqa_questions(2)]
    q_file = write_jsonl(tmp_path / "q.jsonl", questions)
    answers = tmp_path / "a.jsonl"
    model_vqa_loader.main(runner_args(tiny_model_path, q_file, answers, image_folder))
    scores = eval_exact_match.main(["--question-file", str(q_file), "--result-file", str(answers)])
    assert scores.count == 2
    # Another benchmark's questions with the same ids (and answers), but other content.
    other = write_jsonl(tmp_path / "other.jsonl", [{**q, "text": "Other?"} for q in questions])
    with pytest.raises(
        ValueError, match=r"a.jsonl answers the questions of '.*q.jsonl' .* not those of '.*other.jsonl'"
    ):
        eval_exact_match.main(["--question-file", str(other), "--result-file", str(answers)])
