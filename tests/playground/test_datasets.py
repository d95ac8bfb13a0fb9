"""The data stage: determinism, LLaVA formats, MME ground truth layout, train/eval separation."""

import dataclasses
import hashlib
import json
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from llava.playground.datasets import DataSizes, PlaygroundData, build_data, read_sizes
from llava.playground.scenes import SCENE_WORDS
from llava.playground.stages import DONE
from llava.playground.tasks import CATEGORIES, NO, SHORT_ANSWER_SUFFIX, YES, YES_NO_SUFFIX

SIZES = DataSizes(
    pretrain_images=12,
    train_images=16,
    text_only=4,
    max_turns=3,
    mme_images_per_category=3,
    vqa_per_category=2,
)


def _digests(root: Path) -> dict[str, str]:
    """Every data file's SHA-256 (not the stage record, which holds its wall time)."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != DONE
    }


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> PlaygroundData:
    return build_data(tmp_path_factory.mktemp("data"), seed=0, sizes=SIZES)


def test_same_seed_writes_identical_files_and_other_seeds_differ(data, tmp_path):
    again = build_data(tmp_path / "again", seed=0, sizes=SIZES)
    other = build_data(tmp_path / "other", seed=1, sizes=SIZES)
    assert _digests(data.root) == _digests(again.root)
    different = _digests(other.root)
    assert set(different) == set(_digests(data.root))
    assert different != _digests(data.root)


def test_finished_build_is_reused_and_other_settings_refused(data):
    before = _digests(data.root)
    assert build_data(data.root, seed=0, sizes=SIZES) == data
    assert _digests(data.root) == before
    with pytest.raises(FileExistsError, match="other settings"):
        build_data(data.root, seed=5, sizes=SIZES)


def test_unfinished_build_is_rebuilt(tmp_path):
    first = build_data(tmp_path / "d", seed=0, sizes=SIZES)
    (first.root / DONE).unlink()
    (first.instruct_json).write_text("truncated")
    rebuilt = build_data(tmp_path / "d", seed=0, sizes=SIZES)
    assert json.loads(rebuilt.instruct_json.read_text())


def test_refuses_a_foreign_non_empty_directory(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="holds no playground stage"):
        build_data(tmp_path, seed=0, sizes=SIZES)


def test_pretrain_json_is_llava_caption_format(data):
    records = json.loads(data.pretrain_json.read_text())
    assert len(records) == SIZES.pretrain_images
    for record in records:
        assert set(record) == {"id", "image", "conversations"}
        human, gpt = record["conversations"]
        assert human == {"from": "human", "value": "<image>"}
        # The caption is the scene in the chat LM's own words, one word per cell in reading order.
        assert gpt["from"] == "gpt"
        cells = [cell.rstrip(".").split(" ") for cell in gpt["value"].split(". ")]
        words = [word for word, *_ in cells]
        assert all(word in SCENE_WORDS for word in words), gpt["value"]
        assert [SCENE_WORDS[word][:2] for word in words] == [("top", "left"), ("top", "right"),
                                                            ("bottom", "left"), ("bottom", "right")]  # fmt: skip
        assert [rest for _, *rest in cells if rest] == [[digit] for digit in gpt["value"] if digit.isdigit()]
        assert sum(word.endswith("digit") for word in words) == 1 and gpt["value"].endswith(".")
        assert (data.image_folder / record["image"]).is_file()


def test_instruct_json_is_llava_mix_format(data):
    records = json.loads(data.instruct_json.read_text())
    with_image = [r for r in records if "image" in r]
    text_only = [r for r in records if "image" not in r]
    assert (len(with_image), len(text_only)) == (SIZES.train_images, SIZES.text_only)
    assert len({r["id"] for r in records}) == len(records)
    for record in records:
        turns = record["conversations"]
        assert 2 <= len(turns) <= 2 * SIZES.max_turns and len(turns) % 2 == 0
        assert [t["from"] for t in turns] == ["human", "gpt"] * (len(turns) // 2)
        first = turns[0]["value"]
        if "image" in record:
            assert first.startswith("<image>\n")
            assert (data.image_folder / record["image"]).is_file()
        else:
            assert first.startswith("topleft") and "<image>" not in first
        assert sum("<image>" in t["value"] for t in turns) == ("image" in record)
        for human in turns[0::2]:
            assert human["value"].endswith((YES_NO_SUFFIX, SHORT_ANSWER_SUFFIX))


def _mme_ground_truth(data: PlaygroundData) -> dict[tuple[str, str, str], str]:
    """(category, image file, question) -> answer, read as MME's scorer reads the release folder."""
    truth = {}
    for category_dir in sorted(p for p in data.mme_dir.iterdir() if p.is_dir()):
        for txt in sorted((category_dir / "questions_answers_YN").glob("*.txt")):
            image = category_dir / "images" / f"{txt.stem}.png"
            assert image.is_file(), f"{txt} has no image"
            for line in txt.read_text().splitlines():
                question, answer = line.split("\t")
                truth[category_dir.name, image.name, question] = answer
    return truth


def test_mme_jsonl_matches_ground_truth_and_is_balanced(data):
    rows = [json.loads(line) for line in data.mme_question_file.read_text().splitlines()]
    truth = _mme_ground_truth(data)
    assert len(rows) == len(truth) == 2 * SIZES.mme_images_per_category * len(CATEGORIES)
    per_image = defaultdict(list)
    answers = defaultdict(Counter)
    for row in rows:
        assert set(row) == {"question_id", "image", "text", "category"}
        assert row["question_id"] == row["image"]
        assert row["question_id"].split("/")[0] == row["category"]
        assert (data.mme_dir / row["image"]).is_file()
        assert row["text"].endswith(YES_NO_SUFFIX)
        answer = truth[row["category"], row["image"].split("/")[-1], row["text"]]
        per_image[row["image"]].append(answer)
        answers[row["category"]][answer] += 1
    assert all(sorted(a) == [NO, YES] for a in per_image.values())
    assert set(answers) == set(CATEGORIES)
    assert all(c[YES] == c[NO] == SIZES.mme_images_per_category for c in answers.values())


def test_vqa_jsonl_has_answers_for_every_category(data):
    rows = [json.loads(line) for line in data.vqa_question_file.read_text().splitlines()]
    assert [r["question_id"] for r in rows] == list(range(len(rows)))
    assert Counter(r["category"] for r in rows) == dict.fromkeys(CATEGORIES, SIZES.vqa_per_category)
    for row in rows:
        assert set(row) == {"question_id", "image", "text", "category", "answer"}
        assert row["text"].endswith(SHORT_ANSWER_SUFFIX) and row["answer"]
        assert (data.vqa_image_folder / row["image"]).is_file()


def test_no_eval_image_appears_in_training(data):
    def hashes(folder: Path) -> set[str]:
        return {hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*.png")}

    train = hashes(data.image_folder)
    assert len(train) == SIZES.pretrain_images + SIZES.train_images
    assert not train & (hashes(data.mme_dir) | hashes(data.vqa_image_folder))


@pytest.mark.parametrize("ratio", [0.0, 1.0])
def test_yes_no_ratio_sets_the_instruction_question_kind(tmp_path, ratio):
    sizes = dataclasses.replace(SIZES, pretrain_images=0, text_only=2, yes_no_ratio=ratio)
    built = build_data(tmp_path, seed=0, sizes=sizes)
    humans = [
        t["value"] for r in json.loads(built.instruct_json.read_text()) for t in r["conversations"][0::2]
    ]
    assert len(humans) >= sizes.train_images
    suffix = YES_NO_SUFFIX if ratio == 1.0 else SHORT_ANSWER_SUFFIX
    assert all(h.endswith(suffix) for h in humans)


def test_size_validation():
    with pytest.raises(ValueError, match="max_turns"):
        DataSizes(1, 1, 1, 0, 1, 1)
    for ratio in (-0.1, 1.5):
        with pytest.raises(ValueError, match="yes_no_ratio"):
            DataSizes(1, 1, 1, 1, 1, 1, yes_no_ratio=ratio)
    for weights in ({"OCR": 0.0}, {"ocr": 2.0}):
        with pytest.raises(ValueError, match="category_weights"):
            DataSizes(1, 1, 1, 1, 1, 1, category_weights=weights)
    for digits in ((3,), (1, 1, 2), (8, 9, 10)):
        with pytest.raises(ValueError, match="DataSizes.digits"):
            DataSizes(1, 1, 1, 1, 1, 1, digits=digits)


def test_every_scene_and_digit_question_keeps_to_the_presets_digits(tmp_path):
    digits = (2, 7)
    sizes = dataclasses.replace(SIZES, mme_images_per_category=20, vqa_per_category=10, digits=digits)
    built = build_data(tmp_path / "d", seed=0, sizes=sizes)
    assert read_sizes(built.root) == sizes
    assert build_data(tmp_path / "d", seed=0, sizes=sizes) == built  # the settings read back match
    named = set()
    for row in map(json.loads, built.mme_question_file.read_text().splitlines()):
        if row["category"] == "OCR":
            named.add(int(row["text"].split("?")[0].split()[-1]))
    assert named == set(digits)  # both the "Yes" digit and the "No" one come from the preset's
    vqa = [json.loads(line) for line in built.vqa_question_file.read_text().splitlines()]
    assert {int(r["answer"]) for r in vqa if r["category"] == "OCR"} <= set(digits)
    captions = json.loads(built.pretrain_json.read_text())
    instruct = json.loads(built.instruct_json.read_text())
    texts = [c["conversations"][1]["value"] for c in captions] + [
        t["value"] for r in instruct for t in r["conversations"]
    ]
    shown = {int(word.rstrip(".")) for text in texts for word in text.split() if word.rstrip(".").isdigit()}
    assert set(digits) <= shown
    described = [w for c in captions for w in c["conversations"][1]["value"].split()]
    captioned = {int(described[i + 1].rstrip(".")) for i, w in enumerate(described) if w.endswith("digit")}
    assert captioned == set(digits)


def test_mme_files_are_read_by_the_project_scorer(data):
    from llava.eval.eval_mme import convert_answers, load_ground_truth, score_mme
    from llava.playground.tasks import COGNITION_CATEGORIES, PERCEPTION_CATEGORIES

    truth = _mme_ground_truth(data)
    rows = [json.loads(line) for line in data.mme_question_file.read_text().splitlines()]
    answers = [
        {
            "question_id": r["question_id"],
            "prompt": r["text"],
            "text": truth[r["category"], r["image"].split("/")[-1], r["text"]] if i % 4 else "Maybe",
        }
        for i, r in enumerate(rows)
    ]
    records = convert_answers(answers, load_ground_truth(data.mme_dir))
    scores = score_mme(records, perception=PERCEPTION_CATEGORIES, cognition=COGNITION_CATEGORIES)
    assert set(scores.subtasks) == set(CATEGORIES)
    n_right = sum(round(s.acc * 2 * SIZES.mme_images_per_category) for s in scores.subtasks.values())
    assert n_right == len(rows) - len(rows[::4])


def test_a_damaged_stage_record_is_named(tmp_path):
    built = build_data(tmp_path / "d", seed=0, sizes=SIZES)
    (built.root / DONE).write_text('{"settings": ')
    with pytest.raises(ValueError, match=r"DONE\.json: not valid JSON .*delete its folder"):
        build_data(tmp_path / "d", seed=0, sizes=SIZES)
