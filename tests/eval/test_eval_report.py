"""The report: Table 1 in markdown and LaTeX with the paper's rows, and Figure 3 as a PNG."""

import json
import struct

import pytest

from llava.eval.eval_mme import MME_COGNITION, MME_PERCEPTION
from llava.eval.report import NOT_SCORED, build_report, figure3, load_results, main


@pytest.fixture
def results_dir(tmp_path, write_json):
    root = tmp_path / "results"
    subtasks = {name: 100.0 + i for i, name in enumerate(MME_PERCEPTION + MME_COGNITION)}
    write_json(root / "inverse_llava_7b" / "gqa.json", {"benchmark": "gqa", "score": 58.456})
    write_json(root / "inverse_llava_7b" / "mme.json", {
        "benchmark": "mme", "score": 1290.5, "perception": 1290.5, "cognition": 330.25, "subtasks": subtasks,
    })  # fmt: skip
    write_json(root / "llava15_7b" / "sqa.json", {"benchmark": "sqa", "score": 66.8})
    write_json(root / "llava15_7b" / "mme.json", {
        "benchmark": "mme", "score": 1500.0, "perception": 1500.0, "cognition": 250.0,
        "subtasks": {name: 150.0 for name in MME_PERCEPTION},
    })  # fmt: skip
    return root


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_report(results_dir, tmp_path):
    out = tmp_path / "report"
    written = main(["--results-dir", str(results_dir), "--out", str(out)])
    md = written["markdown"].read_text()
    assert "| model | MM-Vet | VizWiz | SQA-I | MMB | MMB-CN | MME-P | VQAv2 | TextVQA | GQA |" in md
    assert "| LLaVA-1.5 (paper) | 31.1 | 50.0 | 66.80 | 64.3 | 58.3 | 1510.7 | 78.5 | 58.2 | 62.0 |" in md
    assert (
        "| Inverse-LLaVA (paper) | 31.2 | 50.95 | 67.84 | 54.55 | 41.84 | 1293.15 | 74.76 | 52.02 | 58.46 |"
        in md
    )
    assert "| Inverse-LLaVA-HD (paper) | - | - | - | - | - | 1335.67 | - | - | 59.33 |" in md
    # The authors' 2026 README, as printed (VQAv2 test-dev, SQA-IMG, MME perception).
    assert (
        "| Inverse-LLaVA (authors 2026) | 28.67 | 50.96 | 69.61 | 62.63 | 54.04 | 1453.82 | 78.45 | 56.96 | 62.28 |"
        in md
    )
    assert "| LLaVA-1.5 FFT (authors 2026) | 1507.28 | 344.64 |" in md
    assert "| inverse_llava_7b | - | - | - | - | - | 1290.50 | - | - | 58.46 |" in md
    assert "| llava15_7b | - | - | 66.80 | - | - | 1500.00 | - | - | - |" in md
    assert (
        "| LLaVA-1.5-7B-LoRA (paper) | 1477.05 | 257.86 |" in md
        and "| inverse_llava_7b | 1290.50 | 330.25 |" in md
    )

    tex = written["latex"].read_text()
    assert r"\begin{tabular}{lccccccccc}" in tex
    assert (
        r"Inverse-LLaVA (paper) & 31.2 & 50.95 & 67.84 & 54.55 & 41.84 & 1293.15 & 74.76 & 52.02 & 58.46 \\"
        in tex
    )
    assert r"inverse\_llava\_7b & - & - & - & - & - & 1290.50 & - & - & 58.46 \\" in tex

    width, height = _png_size(written["figure"])
    assert width > 500 and height > 200 and written["figure"].stat().st_size > 10_000


def test_report_without_results_still_has_paper_rows(tmp_path):
    (tmp_path / "empty").mkdir()
    written = build_report(load_results(tmp_path / "empty"), tmp_path / "out")
    assert "figure" not in written
    assert "LLaVA-1.5 (paper)" in written["markdown"].read_text()


def test_results_without_score_are_refused(tmp_path, write_json):
    write_json(tmp_path / "m" / "gqa.json", {"accuracy": 1})
    with pytest.raises(ValueError, match="gqa.json: expected an object with a 'score' field"):
        load_results(tmp_path)


def test_scorer_results_json_feeds_the_report(tmp_path, write_json, write_jsonl):
    from llava.eval import eval_gqa

    write_json(tmp_path / "q.json", {"q1": {"answer": "yes"}, "q2": {"answer": "no"}})
    write_json(
        tmp_path / "p.json",
        [{"questionId": "q1", "prediction": "yes"}, {"questionId": "q2", "prediction": "yes"}],
    )
    res = tmp_path / "results" / "my_model" / "gqa.json"
    eval_gqa.main(
        [
            "--questions",
            str(tmp_path / "q.json"),
            "--predictions",
            str(tmp_path / "p.json"),
            "--results-json",
            str(res),
        ]
    )
    assert json.loads(res.read_text())["score"] == 50.0
    assert load_results(tmp_path / "results")["my_model"]["gqa"]["score"] == 50.0


@pytest.fixture
def partial_results(tmp_path, write_json):
    """A model scored on 2 of MME's 10 perception subtasks and none of its cognition ones (as
    llava.eval.eval_mme writes it), and on part of GQA's questions."""
    root = tmp_path / "partial"
    write_json(root / "m" / "mme.json", {
        "benchmark": "mme", "score": 250.0, "partial": "2 of 10 subtasks", "perception": 250.0, "cognition": None,
        "partial_totals": {"perception": "2 of 10 subtasks", "cognition": "0 of 4 subtasks"},
        "subtasks": {"existence": 150.0, "count": 100.0},
    })  # fmt: skip
    write_json(root / "m" / "gqa.json", {"benchmark": "gqa", "score": 50.0, "partial": "40 of 52 questions"})
    return root


def test_partial_scores_are_marked_and_unscored_totals_missing(partial_results, tmp_path):
    written = main(["--results-dir", str(partial_results), "--out", str(tmp_path / "report")])
    md = written["markdown"].read_text()
    partial_mme, partial_gqa = "250.00 (partial: 2 of 10 subtasks)", "50.00 (partial: 40 of 52 questions)"
    assert f"| m | - | - | - | - | - | {partial_mme} | - | - | {partial_gqa} |" in md
    assert f"| m | {partial_mme} | - |" in md  # MME totals: cognition unscored, not 0.00
    assert "2 of 10 subtasks" in written["latex"].read_text()


def test_figure_marks_unscored_subtasks_instead_of_drawing_empty_bars():
    fig = figure3({"m": {"existence": 150.0, "count": 0.0}})
    perception, cognition = fig.axes
    assert [bar.get_height() for bar in perception.patches] == [150.0, 0.0]  # a real 0 is a bar
    assert [text.get_text() for text in perception.texts] == [NOT_SCORED] * 8
    assert not cognition.patches and [text.get_text() for text in cognition.texts] == [NOT_SCORED] * 4
