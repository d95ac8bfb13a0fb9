"""llava.eval.compare: the paired bootstrap (stratified, seeded, exact on identical runs), the
scorers' numbers on the full data (POPE, MME, MMBench, ScienceQA), LLaVA-1.5-13B's published POPE
answers against a copy with 5% of them flipped, and the report's seed-spread and comparison
sections."""

import json
import statistics
from pathlib import Path

import numpy as np
import pytest

from llava.eval import compare, eval_mmbench, eval_mme, eval_pope, eval_science_qa, report
from llava.eval.benchmarks import BENCHMARKS
from llava.eval.bootstrap import PairedUnits, Stratum, paired_bootstrap
from llava.eval.scoring_io import CoverageError, read_jsonl

POPE_DIR = Path(__file__).parent / "data" / "pope"
PUBLISHED = POPE_DIR / "answers" / "llava-v1.5-13b.jsonl"  # LLaVA-1.5-13B's answers (see data/README.md)
SPLITS = ("adversarial", "popular", "random")


def _run(argv, capsys=None):
    result = compare.main([str(arg) for arg in argv])
    if capsys is not None:
        capsys.readouterr()
    return result


def _pope(answers_a, answers_b, *extra):
    return _run(
        ["--benchmark", "pope", "--answers-a", answers_a, "--answers-b", answers_b,
         "--annotation-dir", POPE_DIR / "coco", "--question-file", POPE_DIR / "llava_pope_test.jsonl", *extra]
    )  # fmt: skip


def _assert_identical(result):
    for name, m in result["metrics"].items():
        assert m["a"] == m["b"] and m["difference"] == 0.0 and m["ci95"] == [0.0, 0.0], name


# ----------------------------------------------------------------------------------------------
# The bootstrap itself
# ----------------------------------------------------------------------------------------------


def test_resamples_are_drawn_within_strata():
    """Each stratum keeps its size in every resample: a metric counting one stratum's units is
    the same on every resample, so its interval is a single point."""
    units = PairedUnits(
        strata=(
            Stratum("x", np.ones((7, 1)), 2 * np.ones((7, 1))),
            Stratum("y", np.ones((3, 1)), np.ones((3, 1))),
        ),
        metrics=lambda sums: {"x": sums["x"][..., 0], "y": sums["y"][..., 0]},
        description="test",
    )
    result = paired_bootstrap(units, resamples=300, seed=1)
    assert (result["x"].a, result["x"].b, result["x"].difference) == (7.0, 14.0, 7.0)
    assert result["x"].ci95 == (7.0, 7.0) and result["y"].ci95 == (0.0, 0.0)


def test_interval_width_matches_the_standard_error_of_a_paired_mean():
    """For a mean of paired 0/1 outcomes, the 95% percentile interval is about +- 1.96 sd(d)/sqrt(n)
    around the observed difference (d = b - a per item)."""
    rng = np.random.default_rng(0)
    a = (rng.random(2000) < 0.7).astype(float)
    b = np.where(rng.random(2000) < 0.2, 1 - a, a)  # 20% of the items change outcome
    units = PairedUnits(
        (Stratum("all", a[:, None], b[:, None]),), lambda s: {"acc": s["all"][..., 0] / 2000}, "t"
    )
    result = paired_bootstrap(units, resamples=4000, seed=3)["acc"]
    d = b - a
    half_width = 1.96 * d.std() / np.sqrt(len(d))
    lo, hi = result.ci95
    assert result.difference == pytest.approx(d.mean(), abs=1e-12)
    assert (hi - lo) / 2 == pytest.approx(half_width, rel=0.1)
    assert lo < d.mean() < hi


def test_seeded_and_reproducible(tmp_path, write_jsonl):
    flipped = write_jsonl(tmp_path / "b.jsonl", _flip(read_jsonl(PUBLISHED), 0.05, seed=7)[0])
    first, again = (
        _pope(PUBLISHED, flipped, "--resamples", 500),
        _pope(PUBLISHED, flipped, "--resamples", 500),
    )
    other = _pope(PUBLISHED, flipped, "--resamples", 500, "--seed", 1)
    assert first["metrics"] == again["metrics"] and first["seed"] == 0 and first["resamples"] == 500
    assert first["metrics"]["mean_f1"]["ci95"] != other["metrics"]["mean_f1"]["ci95"]
    assert first["metrics"]["mean_f1"]["difference"] == other["metrics"]["mean_f1"]["difference"]


def test_runs_over_different_items_are_refused():
    with pytest.raises(
        ValueError, match=r"x: a.jsonl and b.jsonl do not cover the same items \(1 only in the first"
    ):
        compare.paired_strata({"x": {1: [1], 2: [0]}}, {"x": {1: [1]}}, ("a.jsonl", "b.jsonl"))
    with pytest.raises(ValueError, match=r"y: a.jsonl and b.jsonl .* 1 only in the second, e.g. \[3\]"):
        compare.paired_strata({"x": {1: [1]}}, {"x": {1: [1]}, "y": {3: [1]}}, ("a.jsonl", "b.jsonl"))


def test_every_comparison_is_a_registered_benchmark():
    assert set(compare.COMPARISONS) <= set(BENCHMARKS)


# ----------------------------------------------------------------------------------------------
# POPE on LLaVA-1.5-13B's published answers
# ----------------------------------------------------------------------------------------------


def test_pope_a_is_the_scorers_numbers(tmp_path, capsys):
    saved = tmp_path / "pope.json"
    eval_pope.main(
        ["--annotation-dir", str(POPE_DIR / "coco"), "--question-file", str(POPE_DIR / "llava_pope_test.jsonl"),
         "--result-file", str(PUBLISHED), "--results-json", str(saved)]
    )  # fmt: skip
    scored = json.loads(saved.read_text())
    metrics = _pope(PUBLISHED, PUBLISHED, "--resamples", 50)["metrics"]
    assert metrics["mean_f1"]["a"] == scored["score"]
    assert list(metrics) == ["mean_f1"] + [f"{s}/{m}" for s in SPLITS for m in compare.POPE_METRICS]
    for split in SPLITS:
        for name in compare.POPE_METRICS:
            assert metrics[f"{split}/{name}"]["a"] == scored["categories"][split][name], (split, name)
    assert scored["score"] == pytest.approx(85.84, abs=0.005)  # the 300-question excerpt (data/README.md)


def test_identical_files_differ_by_zero(capsys):
    result = _pope(PUBLISHED, PUBLISHED)
    _assert_identical(result)
    assert result["resamples"] == compare.DEFAULT_RESAMPLES
    assert result["units"] == {"adversarial": 100, "popular": 100, "random": 100}
    out = capsys.readouterr().out
    assert f"{compare.DEFAULT_RESAMPLES} resamples, seed 0" in out
    assert "mean_f1" in out and "[0.0000, 0.0000]" in out


def _flip(answers, fraction, seed):
    """A copy of `answers` with `fraction` of them (chosen by a seeded rng) turned Yes <-> No."""
    rng = np.random.default_rng(seed)
    chosen = set(rng.choice(len(answers), size=round(fraction * len(answers)), replace=False).tolist())
    flipped = [
        {**answer, "text": {"Yes": "No", "No": "Yes"}[answer["text"]]} if i in chosen else answer
        for i, answer in enumerate(answers)
    ]
    return flipped, {answers[i]["question_id"] for i in chosen}


def _labels_by_question():
    """{question_id: label}: the k-th question of a split in the question file is the k-th line of
    the split's label file (POPE's pairing), checked on the question text."""
    labels, per_split = {}, {}
    for question in read_jsonl(POPE_DIR / "llava_pope_test.jsonl"):
        per_split.setdefault(question["category"], []).append(question)
    for split, questions in per_split.items():
        lines = read_jsonl(POPE_DIR / "coco" / f"coco_pope_{split}.json")
        for question, line in zip(questions, lines, strict=True):
            assert question["text"].startswith(line["text"])
            labels[question["question_id"]] = (split, line["label"])
    return labels


def _by_hand(answers, labels):
    """Accuracy and F1 per split, and the mean F1 x 100, counted directly from Yes/No answers."""
    counts = {split: {"tp": 0, "fp": 0, "tn": 0, "fn": 0} for split in SPLITS}
    for answer in answers:
        assert answer["text"] in ("Yes", "No")  # the published answers are exactly these words
        split, label = labels[answer["question_id"]]
        said_yes, is_yes = answer["text"] == "Yes", label == "yes"
        counts[split][("t" if said_yes == is_yes else "f") + ("p" if said_yes else "n")] += 1
    metrics = {}
    for split, c in counts.items():
        precision, recall = c["tp"] / (c["tp"] + c["fp"]), c["tp"] / (c["tp"] + c["fn"])
        metrics[f"{split}/accuracy"] = (c["tp"] + c["tn"]) / sum(c.values())
        metrics[f"{split}/f1"] = 2 * precision * recall / (precision + recall)
    metrics["mean_f1"] = 100 * sum(metrics[f"{split}/f1"] for split in SPLITS) / len(SPLITS)
    return metrics


def test_flipped_answers_give_the_exact_difference_inside_the_interval(tmp_path, write_jsonl, capsys):
    published = read_jsonl(PUBLISHED)
    flipped, chosen = _flip(published, 0.05, seed=2024)
    assert len(chosen) == 15
    labels = _labels_by_question()
    before, after = _by_hand(published, labels), _by_hand(flipped, labels)
    result = _pope(PUBLISHED, write_jsonl(tmp_path / "flipped.jsonl", flipped))
    for name, expected_a in before.items():
        m = result["metrics"][name]
        expected = after[name] - expected_a
        assert m["a"] == pytest.approx(expected_a, abs=1e-12) and m["b"] == pytest.approx(
            after[name], abs=1e-12
        )
        assert m["difference"] == pytest.approx(expected, abs=1e-12), name
        lo, hi = m["ci95"]
        assert lo <= m["difference"] <= hi, name
    # every flip changes one answer's correctness: accuracy moves by (fixed - broken) / 100 per split
    right = {
        a["question_id"]: (a["text"] == "Yes") == (labels[a["question_id"]][1] == "yes") for a in published
    }
    for split in SPLITS:
        moved = [qid for qid in chosen if labels[qid][0] == split]
        change = sum(-1 if right[qid] else 1 for qid in moved) / 100
        assert result["metrics"][f"{split}/accuracy"]["difference"] == pytest.approx(change, abs=1e-12)
    # most answers were right, so the flips break more than they fix
    assert result["metrics"]["mean_f1"]["difference"] < 0


def test_a_missing_answer_in_either_file_is_a_coverage_error_naming_it(tmp_path, write_jsonl):
    published = read_jsonl(PUBLISHED)
    short = write_jsonl(tmp_path / "short.jsonl", published[1:])
    with pytest.raises(
        CoverageError, match=r"short.jsonl: 299 of 300 expected question\(s\) answered; 1 missing"
    ):
        _pope(PUBLISHED, short)
    doubled = write_jsonl(tmp_path / "doubled.jsonl", [*published, published[5]])
    with pytest.raises(CoverageError, match=r"doubled.jsonl: .*1 answered more than once \(e.g. 6 x2\)"):
        _pope(doubled, PUBLISHED)


def test_json_output_and_results_file(tmp_path, capsys):
    written = tmp_path / "cmp" / "pope.json"
    result = _pope(
        PUBLISHED, PUBLISHED, "--resamples", 20, "--json", "--results-json", written, "--label-a", "13b"
    )
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(written.read_text()) == json.loads(json.dumps(result))
    assert printed["a"] == {"label": "13b", "answers": str(PUBLISHED)} and printed["b"]["label"] == str(
        PUBLISHED
    )
    assert printed["method"] == "paired percentile bootstrap over questions, within each split"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--benchmark", "gqa"], "invalid choice: 'gqa'"),
        (["--benchmark", "pope", "--question-file", "q.jsonl"], "--annotation-dir"),
        (
            ["--benchmark", "mmbench", "--annotation-file", "x.tsv", "--resamples", "0"],
            "--resamples must be >= 1",
        ),
    ],
)
def test_command_line_errors(argv, message, capsys):
    with pytest.raises(SystemExit):
        compare.main([*argv, "--answers-a", "a.jsonl", "--answers-b", "b.jsonl"])
    assert message in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# MME: images within subtasks
# ----------------------------------------------------------------------------------------------

YN = " Please answer yes or no."


@pytest.fixture
def mme_dir(tmp_path):
    """MME's layout: existence (4 images, txt files in questions_answers_YN/) and code_reasoning
    (1 image, txt next to it); each image has a yes and a no question."""
    root = tmp_path / "MME_Benchmark_release_version"
    qa = root / "existence" / "questions_answers_YN"
    qa.mkdir(parents=True)
    (root / "existence" / "images").mkdir()
    for i, thing in enumerate(("train", "cat", "dog", "bus"), start=1):
        (qa / f"00000{i}.txt").write_text(f"Is there a {thing}?{YN}\tYes\nIs there a bed?{YN}\tNo\n")
    (root / "code_reasoning").mkdir()
    (root / "code_reasoning" / "0020.txt").write_text(f"Is it 'Hi'?{YN}\tYes\nIs it 'Bye'?{YN}\tNo\n")
    return root


def _mme_answers(mme_dir, wrong=()):
    """Runner answers to every question, right except the (category, txt, question) keys in `wrong`."""
    answers = []
    for (category, txt, question), answer in eval_mme.load_ground_truth(mme_dir).items():
        image = txt.replace(".txt", ".jpg" if category == "existence" else ".png")
        qid = f"{category}/images/{image}" if category == "existence" else f"{category}/{image}"
        text = {"Yes": "No", "No": "Yes"}[answer] if (category, txt, question) in wrong else answer
        answers.append({"question_id": qid, "prompt": question, "text": text})
    return answers


def test_mme_subtasks_and_totals(tmp_path, mme_dir, write_jsonl, capsys):
    bed, hi = f"Is there a bed?{YN}", f"Is it 'Hi'?{YN}"
    a = write_jsonl(tmp_path / "a.jsonl", _mme_answers(mme_dir, wrong={("existence", "000001.txt", bed)}))
    b = write_jsonl(tmp_path / "b.jsonl", _mme_answers(mme_dir, wrong={("code_reasoning", "0020.txt", hi)}))
    saved = tmp_path / "mme.json"
    eval_mme.main(["--answers-file", str(a), "--mme-dir", str(mme_dir), "--results-json", str(saved)])
    scored = json.loads(saved.read_text())
    flags = ["--benchmark", "mme", "--mme-dir", mme_dir]
    result = _run([*flags, "--answers-a", a, "--answers-b", b], capsys)
    m = result["metrics"]
    assert list(m) == ["perception", "cognition", "existence", "code_reasoning"]
    assert (m["perception"]["a"], m["cognition"]["a"]) == (scored["perception"], scored["cognition"])
    assert {name: m[name]["a"] for name in scored["subtasks"]} == scored["subtasks"]
    assert result["units"] == {"existence": 4, "code_reasoning": 1}
    # a: existence 7/8 right, 3/4 images -> 87.5 + 75; b: code_reasoning 1/2, 0/1 -> 50
    assert m["existence"]["difference"] == pytest.approx(200 - 162.5)
    assert m["code_reasoning"]["difference"] == pytest.approx(50 - 200)
    # one image: resampled within its subtask it is always drawn, so the interval is the point
    assert m["code_reasoning"]["ci95"] == [-150.0, -150.0]
    _assert_identical(_run([*flags, "--answers-a", a, "--answers-b", a], capsys))


# ----------------------------------------------------------------------------------------------
# MMBench: circular groups within categories
# ----------------------------------------------------------------------------------------------

MMBENCH_A = {0: "A", 1_000_000: "C. cat", 2_000_000: "(B)", 1: "B", 1_000_001: "B",
             2: "D", 1_000_002: "The answer is A", 2_000_002: "A red car.", 3_000_002: "A"}  # fmt: skip


def test_mmbench_circular_groups(tmp_path, write_jsonl, mmbench_tsv, capsys):
    tsv, rows = mmbench_tsv
    a = write_jsonl(tmp_path / "a.jsonl", [{"question_id": k, "text": v} for k, v in MMBENCH_A.items()])
    b = write_jsonl(
        tmp_path / "b.jsonl", [{"question_id": int(r["index"]), "text": r["answer"]} for r in rows]
    )
    scores = eval_mmbench.main(["--annotation-file", str(tsv), "--result-file", str(a)])
    result = _run(
        ["--benchmark", "mmbench", "--annotation-file", tsv, "--answers-a", a, "--answers-b", b], capsys
    )
    m = result["metrics"]
    assert (m["circular"]["a"], m["vanilla"]["a"]) == (scores.circular, scores.vanilla)
    assert {name: m[f"category/{name}"]["a"] for name in scores.categories} == scores.categories
    assert result["units"] == {"logic": 1, "ocr": 2}  # 3 questions, 9 rows
    assert m["circular"]["difference"] == pytest.approx(100 - 100 / 3)
    assert m["category/logic"]["ci95"] == [100.0, 100.0]  # its one group is drawn in every resample
    assert result["method"].endswith("circular question groups, within each category")


# ----------------------------------------------------------------------------------------------
# ScienceQA-IMG: problems
# ----------------------------------------------------------------------------------------------


def test_science_qa_problems(tmp_path, write_json, write_jsonl, capsys):
    problems = {str(i): {"choices": ["x", "y"], "answer": i % 2, "split": "test"} for i in range(1, 9)}
    write_json(tmp_path / "problems.json", problems)
    write_json(tmp_path / "pid_splits.json", {"test": list(problems)})
    img, txt = "<image>\nQ?\nA. x\nB. y", "Q?\nA. x\nB. y"

    def answers(wrong):
        return [{"question_id": pid, "prompt": img if int(pid) <= 5 else txt,
                 "text": "AB"[(p["answer"] + (pid in wrong)) % 2]} for pid, p in problems.items()]  # fmt: skip

    a, b = (
        write_jsonl(tmp_path / "a.jsonl", answers({"1", "6"})),
        write_jsonl(tmp_path / "b.jsonl", answers({"2"})),
    )
    scored = eval_science_qa.main(["--base-dir", str(tmp_path), "--result-file", str(a)])
    result = _run(["--benchmark", "sqa", "--base-dir", tmp_path, "--answers-a", a, "--answers-b", b], capsys)
    m = result["metrics"]
    assert (m["img_accuracy"]["a"], m["accuracy"]["a"]) == (scored.img_accuracy, scored.accuracy)
    assert m["img_accuracy"]["a"] == m["img_accuracy"]["b"] == 80.0  # 4 of 5 image problems right in both
    assert m["accuracy"]["difference"] == pytest.approx(100 * (7 - 6) / 8)
    assert result["units"] == {"test": 8}


# ----------------------------------------------------------------------------------------------
# The report: training-seed spread and evaluation intervals, in separate sections
# ----------------------------------------------------------------------------------------------


def test_report_shows_seed_spread_and_comparison_intervals_separately(tmp_path, write_json, write_jsonl):
    results = tmp_path / "results"
    for model, gqa in (("s1", 58.0), ("s2", 59.0), ("s3", 60.5), ("other", 50.0)):
        write_json(results / model / "gqa.json", {"benchmark": "gqa", "score": gqa})
    write_json(
        results / "s3" / "mme.json", {"benchmark": "mme", "score": 1300.0, "partial": "2 of 10 subtasks"}
    )
    flipped = write_jsonl(tmp_path / "flipped.jsonl", _flip(read_jsonl(PUBLISHED), 0.05, seed=2024)[0])
    comparison = tmp_path / "comparisons" / "pope.json"
    result = _pope(PUBLISHED, flipped, "--resamples", 200, "--results-json", comparison,
                   "--label-a", "llava-v1.5-13b", "--label-b", "flipped")  # fmt: skip
    written = report.main(
        ["--results-dir", str(results), "--out", str(tmp_path / "report"),
         "--seed-group", "ours=s1,s2,s3", "--comparison", str(comparison.parent)]
    )  # fmt: skip
    md = written["markdown"].read_text()
    spread, intervals = md.index("## Training-seed spread"), md.index("## Paired comparisons")
    assert spread < intervals
    gqa = f"{statistics.mean([58.0, 59.0, 60.5]):.2f} ± {statistics.stdev([58.0, 59.0, 60.5]):.2f} (n=3)"
    assert f"| ours | - | - | - | - | - | - | - | - | {gqa} |" in md  # MME: one partial score, no spread
    assert "### pope: a = llava-v1.5-13b, b = flipped" in md[intervals:]
    m = result["metrics"]["mean_f1"]
    lo, hi = m["ci95"]
    row = f"| mean_f1 | {m['a']:.4f} | {m['b']:.4f} | {m['difference']:+.4f} | [{lo:+.4f}, {hi:+.4f}] |"
    assert row in md[intervals:] and "200 resamples, seed 0" in md[intervals:]
    assert "±" not in md[intervals:]  # no seed spread among the evaluation intervals


def test_report_refuses_unknown_seed_models_and_foreign_json(tmp_path, write_json):
    write_json(tmp_path / "results" / "s1" / "gqa.json", {"benchmark": "gqa", "score": 1.0})
    with pytest.raises(ValueError, match=r"seed group 'ours': no results for \['s9'\]"):
        report.main(
            [
                "--results-dir",
                str(tmp_path / "results"),
                "--out",
                str(tmp_path / "r"),
                "--seed-group",
                "ours=s1,s9",
            ]
        )
    with pytest.raises(SystemExit):
        report.main(
            [
                "--results-dir",
                str(tmp_path / "results"),
                "--out",
                str(tmp_path / "r"),
                "--seed-group",
                "s1,s2",
            ]
        )
    write_json(tmp_path / "not_a_comparison.json", {"benchmark": "gqa", "score": 1.0})
    with pytest.raises(ValueError, match=r"not_a_comparison.json: not a llava.eval.compare result"):
        report.load_comparisons([tmp_path / "not_a_comparison.json"])
