"""MME: yes/no parsing, acc + acc+ per subtask, ground-truth lookup, txt round trip, guessing."""

import itertools
import json

import pytest

from llava.eval.eval_mme import (
    MMERecord,
    convert_answers,
    guessing_p_value,
    load_ground_truth,
    main,
    parse_yes_no,
    read_mme_txt,
    score_mme,
    write_mme_txt,
)
from llava.eval.scoring_io import CoverageError

SUFFIX = "\nAnswer the question using a single word or phrase."
YN = " Please answer yes or no."


@pytest.mark.parametrize(
    ("prediction", "label"),
    [
        ("Yes", "yes"),
        ("no", "no"),
        ("Yes.", "yes"),  # not exact, "yes" within the first 4 chars
        ("No, it is not", "no"),
        ("Not sure", "no"),  # "no" inside "not " (the reference's rule)
        ("There is a dog", "other"),
        ("I think yes", "other"),  # "yes" after the first 4 chars
    ],
)
def test_parse_yes_no(prediction, label):
    assert parse_yes_no(prediction) == label


def _rec(cat, image, answer, prediction, q="q"):
    return MMERecord(cat, image, q, answer, prediction)


def test_acc_plus_pairs_and_totals():
    records = [
        # existence, image a: both right; image b: one right -> acc 3/4, acc+ 1/2 -> 75 + 50
        _rec("existence", "a.jpg", "Yes", "Yes", "q1"),
        _rec("existence", "a.jpg", "No", "No", "q2"),
        _rec("existence", "b.jpg", "Yes", "Yes", "q1"),
        _rec("existence", "b.jpg", "No", "There is", "q2"),
        # code_reasoning: one image, both right -> 100 + 100
        _rec("code_reasoning", "0020.png", "Yes", "yes"),
        _rec("code_reasoning", "0020.png", "No", "No."),
    ]
    scores = score_mme(records)
    assert scores.subtasks["existence"].score == pytest.approx(125.0)
    assert scores.subtasks["code_reasoning"].score == pytest.approx(200.0)
    assert (scores.perception, scores.cognition) == pytest.approx((125.0, 200.0))


def test_custom_categories_for_the_playground():
    records = [_rec("comparison", "s1.png", "yes", "yes"), _rec("comparison", "s1.png", "no", "yes")]
    scores = score_mme(records, perception=("count",), cognition=("comparison",))
    # acc 1/2, acc+ 0 -> 50; no count records: no perception total (not a total of 0)
    assert scores.cognition == pytest.approx(50.0) and scores.perception is None
    with pytest.raises(ValueError, match="outside perception/cognition"):
        score_mme(records)


def test_image_with_one_question_raises():
    with pytest.raises(ValueError, match="existence/a.jpg: 1 questions, expected 2"):
        score_mme([_rec("existence", "a.jpg", "yes", "yes")])


@pytest.fixture
def mme_dir(tmp_path):
    root = tmp_path / "MME_Benchmark_release_version"
    (root / "existence" / "images").mkdir(parents=True)
    qa = root / "existence" / "questions_answers_YN"
    qa.mkdir()
    (qa / "000001.txt").write_text(f"Is there a train?{YN}\tYes\nIs there a bed?{YN}\tNo\n")
    (qa / "000002.txt").write_text(f"Is there a cat?{YN}\tYes\nIs there a dog?{YN}\tNo\n")
    code = root / "code_reasoning"
    code.mkdir()
    # a question stored with two spaces before the yes/no request
    (code / "0020.txt").write_text(f"Is the output 'Hello'? {YN}\tYes\nIs the output 'Bye'?{YN}\tNo\n")
    return root


def test_ground_truth_layouts(mme_dir):
    gt = load_ground_truth(mme_dir)
    assert gt[("existence", "000001.txt", f"Is there a train?{YN}")] == "Yes"
    assert gt[("code_reasoning", "0020.txt", "Is the output 'Hello'?  Please answer yes or no.")] == "Yes"
    assert len(gt) == 6


def test_convert_and_score_end_to_end(tmp_path, mme_dir, write_jsonl, capsys):
    answers = [
        {
            "question_id": "existence/images/000001.jpg",
            "prompt": f"Is there a train?{YN}{SUFFIX}",
            "text": "Yes",
        },
        {
            "question_id": "existence/images/000001.jpg",
            "prompt": f"Is there a bed?{YN}{SUFFIX}",
            "text": "No",
        },
        {
            "question_id": "existence/images/000002.jpg",
            "prompt": f"Is there a cat?{YN}{SUFFIX}",
            "text": "Yes",
        },
        {
            "question_id": "existence/images/000002.jpg",
            "prompt": f"Is there a dog?{YN}{SUFFIX}",
            "text": "Yes\nsure",
        },
        # prompt without the yes/no request: found through the two-space variant
        {"question_id": "code_reasoning/0020.png", "prompt": "Is the output 'Hello'?", "text": "Yes"},
        {"question_id": "code_reasoning/0020.png", "prompt": "Is the output 'Bye'?", "text": "No"},
    ]
    write_jsonl(tmp_path / "answers.jsonl", answers)
    out_dir, res = tmp_path / "eval_tool" / "answers" / "ckpt", tmp_path / "mme.json"
    scores = main(
        ["--answers-file", str(tmp_path / "answers.jsonl"), "--mme-dir", str(mme_dir),
         "--output-dir", str(out_dir), "--results-json", str(res)]
    )  # fmt: skip
    # existence: 3/4 right, 1/2 images fully right -> 125; code_reasoning 200
    assert (scores.perception, scores.cognition) == pytest.approx((125.0, 200.0))
    out = capsys.readouterr().out
    assert "total score: 125.00" in out and "\t existence  score: 125.00" in out
    lines = (out_dir / "existence.txt").read_text().splitlines()
    assert lines[3] == f"000002.jpg\tIs there a dog?{YN}\tNo\tYes sure"  # one line, 4 fields
    # the txt files score the same when read back (the eval tool's path)
    assert score_mme(read_mme_txt(out_dir)) == scores
    assert main(["--results-dir", str(out_dir), "--mme-dir", str(mme_dir)]).perception == pytest.approx(125.0)
    saved = json.loads(res.read_text())
    assert saved["score"] == saved["perception"] == pytest.approx(125.0)
    assert saved["subtasks"] == {"existence": 125.0, "code_reasoning": 200.0}
    # The ground truth holds 2 of MME's 14 subtasks: both totals are partial, and say so.
    assert saved["partial"] == "1 of 10 subtasks"
    assert saved["partial_totals"] == {"perception": "1 of 10 subtasks", "cognition": "1 of 4 subtasks"}
    assert "total score: 125.00 (partial: 1 of 10 subtasks)" in out


def test_a_total_without_scored_subtasks_is_missing_not_zero(tmp_path, mme_dir, write_jsonl, capsys):
    """Answers for cognition only (one subtask of four): no perception number at all, and the
    cognition total marked as partial, in the printed table and in the results JSON."""
    gt = load_ground_truth(mme_dir)
    answers = [
        {"question_id": f"{cat}/{txt.replace('.txt', '.png')}", "prompt": q, "text": a}
        for (cat, txt, q), a in gt.items()
        if cat == "code_reasoning"
    ]
    res = tmp_path / "mme.json"
    main(["--answers-file", str(write_jsonl(tmp_path / "answers.jsonl", answers)), "--mme-dir", str(mme_dir),
          "--allow-missing", "--results-json", str(res)])  # fmt: skip
    saved = json.loads(res.read_text())
    assert saved["score"] is None and saved["perception"] is None
    assert saved["cognition"] == pytest.approx(200.0)
    assert saved["partial_totals"] == {"perception": "0 of 10 subtasks", "cognition": "1 of 4 subtasks"}
    assert len(saved["unscored"]) == 13 and "existence" in saved["unscored"]
    out = capsys.readouterr().out
    assert "total score: - (none of its subtasks scored)" in out
    assert "total score: 200.00 (partial: 1 of 4 subtasks)" in out


def test_unknown_question_names_it(mme_dir):
    answer = {"question_id": "existence/images/000001.jpg", "prompt": "Is there a bus?", "text": "No"}
    with pytest.raises(KeyError, match="no question 'Is there a bus\\?' for existence/000001.txt"):
        convert_answers([answer], load_ground_truth(mme_dir))


def test_write_read_round_trip(tmp_path):
    records = [_rec("OCR", "x.jpg", "Yes", "yes\tno"), _rec("OCR", "x.jpg", "No", "No")]
    write_mme_txt(records, tmp_path)
    back = read_mme_txt(tmp_path)
    assert [r.prediction for r in back] == ["yes no", "No"] and back[0].category == "OCR"


def test_command_line_takes_custom_categories(tmp_path, capsys):
    gt = tmp_path / "gt" / "comparison"
    gt.mkdir(parents=True)
    (gt / "s1.txt").write_text("q1\tyes\nq2\tno\n")
    records = [
        _rec("comparison", "s1.png", "yes", "yes", "q1"),
        _rec("comparison", "s1.png", "no", "no", "q2"),
    ]
    write_mme_txt(records, tmp_path / "txt")
    args = ["--results-dir", str(tmp_path / "txt"), "--mme-dir", str(tmp_path / "gt")]
    with pytest.raises(ValueError, match="outside perception/cognition"):
        main(args)
    scores = main([*args, "--perception", "count", "--cognition", "comparison"])
    # both answers right: acc 100 + acc+ 100
    assert scores.cognition == pytest.approx(200.0) and "comparison" in capsys.readouterr().out


def _answers(mme_dir, keep):
    """Runner answers, all right, for the (image, question) pairs in `keep`."""
    gt = load_ground_truth(mme_dir)
    return [
        {"question_id": f"{cat}/images/{txt.replace('.txt', '.jpg')}", "prompt": q + SUFFIX, "text": a}
        for (cat, txt, q), a in gt.items()
        if cat == "existence" and (txt, q) in keep
    ]


def _existence_only(tmp_path, mme_dir, write_jsonl, answers, *extra):
    path = write_jsonl(tmp_path / "answers.jsonl", answers)
    return main(["--answers-file", str(path), "--mme-dir", str(mme_dir), "--perception", "existence",
                 "--cognition", "", *extra])  # fmt: skip


def test_half_the_images_answered_is_an_error_naming_the_counts(tmp_path, mme_dir, write_jsonl, capsys):
    half = {("000001.txt", f"Is there a train?{YN}"), ("000001.txt", f"Is there a bed?{YN}")}
    answers = _answers(mme_dir, half)
    with pytest.raises(
        CoverageError,
        match=r"2 of 4 expected question\(s\) answered; 2 missing \(e.g. \('existence', '000002.txt'",
    ):
        _existence_only(tmp_path, mme_dir, write_jsonl, answers)
    # Opted in: the answered image scores 200 and the file says that half the questions are missing.
    res = tmp_path / "mme.json"
    scores = _existence_only(
        tmp_path, mme_dir, write_jsonl, answers, "--allow-missing", "--results-json", str(res)
    )
    assert scores.perception == pytest.approx(200.0)
    assert json.loads(res.read_text())["coverage"] == {
        "expected": 4,
        "answered": 2,
        "missing": 2,
        "extra": 0,
        "duplicated": 0,
    }
    assert "INCOMPLETE: " in capsys.readouterr().out


def test_a_duplicated_answer_does_not_hide_a_missing_one(tmp_path, mme_dir, write_jsonl):
    keep = {("000001.txt", f"Is there a train?{YN}"), ("000001.txt", f"Is there a bed?{YN}"),
            ("000002.txt", f"Is there a cat?{YN}")}  # fmt: skip
    answers = _answers(mme_dir, keep)
    answers.append(answers[-1])  # image 000002 has "two" answers, one of them twice
    with pytest.raises(
        CoverageError, match=r"1 missing .*Is there a dog.*; 1 answered more than once .*Is there a cat.* x2"
    ):
        _existence_only(tmp_path, mme_dir, write_jsonl, answers, "--allow-missing")


def test_guessing_p_value_is_exact_against_enumerated_coin_flips():
    images = 3
    scores = []
    for outcome in itertools.product((0, 1), repeat=2 * images):  # 1 = a right answer
        pairs = [outcome[2 * i : 2 * i + 2] for i in range(images)]
        acc = sum(outcome) / (2 * images)
        acc_plus = sum(all(p) for p in pairs) / images
        scores.append(100 * (acc + acc_plus))
    for threshold in sorted(set(scores)):
        expected = sum(s >= threshold - 1e-9 for s in scores) / len(scores)
        assert guessing_p_value(threshold, images) == pytest.approx(expected)
    assert guessing_p_value(0.0, 50) == pytest.approx(1.0)
    assert guessing_p_value(200.0, 200) == pytest.approx(0.25**200)
    # more images make the same margin over chance (75) much less likely by guessing
    assert guessing_p_value(95.0, 200) < 1e-3 < 0.01 < guessing_p_value(95.0, 50)
    with pytest.raises(ValueError, match="images"):
        guessing_p_value(90.0, 0)
