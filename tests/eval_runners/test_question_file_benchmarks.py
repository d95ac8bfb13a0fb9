"""OCRBench, AI2D, MMStar and VQAv2 val end to end on a tiny checkpoint: the question file made
from the release files, the short-answer runner (batched), and the scorer on its answers, which
must cover every question once and come from that question file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llava.eval import (
    eval_ai2d,
    eval_mmstar,
    eval_ocrbench,
    eval_vqav2,
    model_vqa_loader,
    question_files,
    run_record,
)
from llava.model.fingerprint import file_sha256
from tests.eval.benchmark_files import (
    OCRBENCH_RECORDS,
    VQAV2_ANSWERS,
    write_ai2d,
    write_mmstar,
    write_ocrbench,
    write_vqav2,
)


def build(bench: str, data: Path) -> tuple[Path, Path, list[str]]:
    """The question file, the image folder and the scorer's data flags of `bench` in `data`."""
    q_file = data / "questions.jsonl"
    if bench == "ocrbench":
        annotation = write_ocrbench(data, images=True)
        question_files.main(["ocrbench", "--annotation-file", str(annotation), "--out", str(q_file)])
        return q_file, data / "OCRBench_Images", ["--annotation-file", str(annotation)]
    if bench == "vqav2_val":
        questions, annotations = write_vqav2(data, images=True)
        question_files.main(["vqav2_val", "--questions", str(questions), "--out", str(q_file)])
        return q_file, data / "val2014", ["--annotation-file", str(annotations)]
    parquet = write_ai2d(data) if bench == "ai2d" else [write_mmstar(data)]
    question_files.main(
        [bench, "--parquet", *map(str, parquet), "--image-dir", str(data / "images"), "--out", str(q_file)]
    )
    return q_file, data / "images", []


def expected_score(bench: str, questions: list[dict], texts: dict) -> float:
    """The score worked out answer by answer with the benchmark's own matching rule."""
    if bench == "ocrbench":
        return sum(
            eval_ocrbench.is_match(texts[q["question_id"]], r["answers"], r["dataset_name"])
            for q, r in zip(questions, OCRBENCH_RECORDS, strict=True)
        )
    if bench == "vqav2_val":
        accuracies = [
            eval_vqav2.vqa_eval_accuracy(texts[q["question_id"]], answers)
            for q, (_, _, answers) in zip(questions, VQAV2_ANSWERS, strict=True)
        ]
        return 100.0 * sum(accuracies) / len(accuracies)
    rule = eval_ai2d.is_correct if bench == "ai2d" else eval_mmstar.is_correct
    return 100.0 * sum(rule(texts[q["question_id"]], q["answer"]) for q in questions) / len(questions)


SCORERS = {"ocrbench": eval_ocrbench, "ai2d": eval_ai2d, "mmstar": eval_mmstar, "vqav2_val": eval_vqav2}
SCORES = {"ocrbench": "final", "ai2d": "accuracy", "mmstar": "overall", "vqav2_val": "overall"}


@pytest.mark.parametrize("bench", list(SCORERS))
def test_release_files_to_score(bench, tiny_model_path, tmp_path):
    q_file, images, data_flags = build(bench, tmp_path / "data")
    answers = tmp_path / "answers.jsonl"
    summary = model_vqa_loader.main(
        ["--model-path", tiny_model_path, "--question-file", str(q_file), "--image-folder", str(images),
         "--answers-file", str(answers), "--max_new_tokens", "4", "--batch-size", "2"]
    )  # fmt: skip
    questions = [json.loads(line) for line in q_file.read_text().splitlines()]
    records = [json.loads(line) for line in answers.read_text().splitlines()]
    assert summary.answered == len(questions) == len(records)
    # Each answer records its question's id and its protocol prompt, unchanged.
    assert [(r["question_id"], r["prompt"]) for r in records] == [
        (q["question_id"], q["text"]) for q in questions
    ]
    assert run_record.read_record(answers)["question_file"]["sha256"] == file_sha256(q_file)

    scores = SCORERS[bench].main([*data_flags, "--question-file", str(q_file), "--result-file", str(answers)])
    texts = {r["question_id"]: r["text"] for r in records}
    assert getattr(scores, SCORES[bench]) == pytest.approx(expected_score(bench, questions, texts))

    # The same ids in a question file with other prompts: not the file these answers come from.
    other = tmp_path / "other.jsonl"
    other.write_text("".join(json.dumps({**q, "text": q["text"] + " "}) + "\n" for q in questions))
    with pytest.raises(
        ValueError, match=r"answers.jsonl answers the questions of .* not those of .*other.jsonl"
    ):
        SCORERS[bench].main([*data_flags, "--question-file", str(other), "--result-file", str(answers)])
