"""The paper's report: Table 1 (markdown + LaTeX) and Figure 3 (MME subtasks), measured results
side by side with the published numbers of `llava.eval.published` (the paper's, and the authors'
2026 release's).

Results layout: `<results-dir>/<model>/<bench>.json`, each `{"benchmark", "score", ...}` as the
scorers write it with `--results-json` (`score` is the Table 1 number; MME's file also holds
`perception`, `cognition` and `subtasks`). Server-scored benchmarks (VQAv2, VizWiz, MMBench
test, MM-Vet) are entered the same way by hand: `{"benchmark": "vqav2", "score": 78.5}`.
A score over part of its benchmark (the file's `partial`, MME's `partial_totals`) is shown with
what it is over, e.g. `250.00 (partial: 2 of 10 subtasks)`; a missing one as `-`, never as 0.

Two kinds of uncertainty are kept apart. `--seed-group LABEL=MODEL,MODEL,...` (models trained with
different seeds) adds the training-seed spread: mean and sample standard deviation of each score
over the group's models. `--comparison FILE` (written by `llava.eval.compare --results-json`, two
runs on one benchmark) adds the evaluation intervals: b - a per metric with its 95% paired
bootstrap interval over the benchmark's items.

    python -m llava.eval.report --results-dir playground/data/eval/results --out reports/ \\
        [--seed-group inverse_llava=seed1,seed2,seed3] [--comparison comparisons/pope.json]
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llava.cli_errors import run_command
from llava.eval.benchmarks import BENCHMARKS, TABLE1_COLUMNS
from llava.eval.eval_mme import MME_COGNITION, MME_PERCEPTION
from llava.eval.published import REFERENCES
from llava.eval.scoring_io import read_json
from llava.extras import require_extra

logger = logging.getLogger(__name__)

MISSING = "-"
Results = dict[str, dict[str, dict[str, Any]]]


@dataclass(frozen=True)
class Row:
    label: str
    cells: tuple[str, ...]


def load_results(results_dir: str | Path) -> Results:
    """{model: {bench: results JSON}} from `<results-dir>/<model>/<bench>.json`."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise FileNotFoundError(f"results dir {results_dir} does not exist")
    results: Results = {}
    for model_dir in sorted(p for p in results_dir.iterdir() if p.is_dir()):
        for path in sorted(model_dir.glob("*.json")):
            if path.stem not in BENCHMARKS:
                logger.warning("%s: not a registered benchmark name; ignored", path)
                continue
            data = read_json(path)
            if not isinstance(data, dict) or "score" not in data:
                raise ValueError(f"{path}: expected an object with a 'score' field")
            results.setdefault(model_dir.name, {})[path.stem] = data
    if not results:
        logger.warning("no results under %s", results_dir)
    return results


def format_score(value: Any, partial: str | None = None) -> str:
    """`12.34`, or `12.34 (partial: <what it is over>)` for a score over part of its benchmark;
    `-` for no score."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    return f"{float(value):.2f}" + (f" (partial: {partial})" if partial else "")


def table1_rows(results: Results) -> list[Row]:
    """Published rows first (the paper's, then the authors' 2026 release's, each labelled with
    its source), then one measured row per model."""
    rows = [
        Row(label + reference.suffix, tuple(values.get(bench, MISSING) for bench in TABLE1_COLUMNS))
        for reference in REFERENCES
        for label, values in reference.table1.items()
    ]
    for model, benches in results.items():
        scores = [benches.get(bench, {}) for bench in TABLE1_COLUMNS]
        rows.append(Row(model, tuple(format_score(s.get("score"), s.get("partial")) for s in scores)))
    return rows


def mme_total_rows(results: Results) -> list[Row]:
    rows = [
        Row(label + reference.suffix, (values.get("perception", MISSING), values.get("cognition", MISSING)))
        for reference in REFERENCES
        for label, values in reference.mme_totals.items()
    ]
    for model, benches in results.items():
        if "mme" in benches:
            mme = benches["mme"]
            partial = mme.get("partial_totals", {})
            cells = tuple(
                format_score(mme.get(total), partial.get(total)) for total in ("perception", "cognition")
            )
            rows.append(Row(model, cells))
    return rows


def table1_header() -> list[str]:
    return ["model", *(BENCHMARKS[bench].table1_label or bench for bench in TABLE1_COLUMNS)]


def render_markdown_table(header: Sequence[str], rows: Sequence[Row]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join((row.label, *row.cells)) + " |" for row in rows]
    return "\n".join(lines)


def latex_escape(text: str) -> str:
    for char, escaped in (
        ("\\", r"\textbackslash{}"),
        ("&", r"\&"),
        ("%", r"\%"),
        ("_", r"\_"),
        ("#", r"\#"),
    ):
        text = text.replace(char, escaped)
    return text


def render_latex_table(header: Sequence[str], rows: Sequence[Row], caption: str) -> str:
    lines = [
        "% needs \\usepackage{booktabs}",
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{latex_escape(caption)}}}",
        r"\begin{tabular}{l" + "c" * (len(header) - 1) + "}",
        r"\toprule",
        " & ".join(latex_escape(h) for h in header) + r" \\",
        r"\midrule",
    ]
    lines += [" & ".join(latex_escape(c) for c in (row.label, *row.cells)) + r" \\" for row in rows]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def mme_subtask_scores(results: Results) -> dict[str, dict[str, float]]:
    """{model: {subtask: score}} for models whose MME results hold per-subtask scores."""
    return {
        model: dict(benches["mme"]["subtasks"])
        for model, benches in results.items()
        if isinstance(benches.get("mme", {}).get("subtasks"), Mapping)
    }


MME_PANELS = (("MME perception", MME_PERCEPTION), ("MME cognition", MME_COGNITION))
NOT_SCORED = "not scored"  # Figure 3's label where a model has no score for a subtask


def figure3(
    subtask_scores: Mapping[str, Mapping[str, float]],
    panels: Sequence[tuple[str, Sequence[str]]] = MME_PANELS,
    reference: tuple[str, float] | None = None,
):
    """Grouped bars, one bar per model and subtask, one panel per (title, subtasks) of `panels`
    (0-200, MME's score); a subtask a model has no score for gets no bar but a vertical "not
    scored" in the model's colour. `reference` = (label, score) adds a dashed line, e.g. chance.
    Returns the matplotlib figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    models = list(subtask_scores)
    colours = {model: f"C{m % 10}" for m, model in enumerate(models)}  # matplotlib's colour cycle
    ratios = [len(names) for _, names in panels]
    fig, (axes,) = plt.subplots(
        1, len(panels), figsize=(14, 4.5), squeeze=False, gridspec_kw={"width_ratios": ratios}
    )
    width = 0.8 / max(len(models), 1)
    label_style = {"rotation": 90, "ha": "center", "va": "bottom", "fontsize": 7}
    for ax, (title, names) in zip(axes, panels, strict=True):
        for m, model in enumerate(models):
            scores, offset = subtask_scores[model], (m - (len(models) - 1) / 2) * width
            scored = [i for i, name in enumerate(names) if name in scores]
            heights = [scores[names[i]] for i in scored]
            ax.bar([i + offset for i in scored], heights, width=width, color=colours[model])
            for i in sorted(set(range(len(names))) - set(scored)):
                ax.text(i + offset, 3, NOT_SCORED, color=colours[model], **label_style)
        if reference is not None:
            ax.axhline(reference[1], color="black", linestyle="--", linewidth=1)
        ax.set_xlim(-0.5, len(names) - 0.5)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels([name.replace("_", "\n") for name in names], fontsize=8)
        ax.set_ylim(0, 200)
        ax.set_ylabel("score (acc + acc+, max 200)")
        ax.set_title(title)
    handles = [Patch(color=colours[model], label=model) for model in models]
    if reference is not None:
        handles.append(Line2D([], [], color="black", linestyle="--", linewidth=1, label=reference[0]))
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 4), bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout()
    return fig


def draw_figure3(
    subtask_scores: Mapping[str, Mapping[str, float]],
    path: Path,
    panels: Sequence[tuple[str, Sequence[str]]] = MME_PANELS,
    reference: tuple[str, float] | None = None,
) -> Path:
    """`figure3` saved as a PNG at `path`."""
    import matplotlib.pyplot as plt

    fig = figure3(subtask_scores, panels, reference)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------------
# Training-seed spread and paired comparisons (evaluation intervals), in sections of their own
# ----------------------------------------------------------------------------------------------


def parse_seed_group(text: str) -> tuple[str, list[str]]:
    """`LABEL=MODEL,MODEL,...` (the `--seed-group` flag) as (label, models)."""
    label, sep, models = text.partition("=")
    names = [name for name in models.split(",") if name]
    if not sep or not label or not names:
        raise ValueError(f"--seed-group {text!r}: expected LABEL=MODEL,MODEL,... (result folder names)")
    return label, names


def seed_spread_rows(results: Results, groups: Mapping[str, Sequence[str]]) -> list[Row]:
    """One row per seed group: per Table 1 benchmark, `mean ± sd (n=k)` of the scores over the
    group's models (sample sd; partial scores left out); `-` with fewer than two scores."""
    rows = []
    for label, models in groups.items():
        unknown = [model for model in models if model not in results]
        if unknown:
            raise ValueError(f"seed group {label!r}: no results for {unknown} (known: {sorted(results)})")
        cells = []
        for bench in TABLE1_COLUMNS:
            found = [results[model].get(bench, {}) for model in models]
            scores = [float(r["score"]) for r in found if r.get("score") is not None and not r.get("partial")]
            if len(scores) < 2:
                cells.append(MISSING)
            else:
                mean, sd = statistics.mean(scores), statistics.stdev(scores)
                cells.append(f"{mean:.2f} ± {sd:.2f} (n={len(scores)})")
        rows.append(Row(label, tuple(cells)))
    return rows


COMPARISON_FIELDS = ("benchmark", "a", "b", "method", "resamples", "metrics")


def load_comparisons(paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    """Comparisons written by `llava.eval.compare --results-json`: each path a file or a folder of them."""
    files: list[Path] = []
    for path in map(Path, paths):
        files += sorted(path.glob("*.json")) if path.is_dir() else [path]
    comparisons = []
    for path in files:
        data = read_json(path)
        missing = [name for name in COMPARISON_FIELDS if not isinstance(data, dict) or name not in data]
        if missing:
            raise ValueError(f"{path}: not a llava.eval.compare result (missing {missing})")
        comparisons.append(data)
    return comparisons


def comparison_rows(comparison: Mapping[str, Any]) -> list[Row]:
    """metric, a, b, b - a, 95% interval: one row per metric of a comparison."""
    rows = []
    for name, m in comparison["metrics"].items():
        lo, hi = m["ci95"]
        cells = (f"{m['a']:.4f}", f"{m['b']:.4f}", f"{m['difference']:+.4f}", f"[{lo:+.4f}, {hi:+.4f}]")
        rows.append(Row(name, cells))
    return rows


def uncertainty_sections(
    results: Results, seed_groups: Mapping[str, Sequence[str]], comparisons: Sequence[Mapping[str, Any]]
) -> list[str]:
    """The training-seed spread and the paired comparisons, each in its own section (none when
    neither is given)."""
    sections = []
    if seed_groups:
        sections += [
            "## Training-seed spread",
            "Mean ± sample standard deviation of each score over models trained with different seeds "
            "(training variation; partial scores left out). It says nothing about evaluation "
            "uncertainty, which the paired comparisons give.",
            render_markdown_table(table1_header(), seed_spread_rows(results, seed_groups)),
        ]
    if comparisons:
        sections += [
            "## Paired comparisons (evaluation intervals)",
            "b - a with its 95% paired bootstrap interval over the benchmark's items: how far the "
            "difference between these two runs could move on another draw of test items. "
            "Training-seed variation is not in it.",
        ]
        for comparison in comparisons:
            a, b = comparison["a"]["label"], comparison["b"]["label"]
            header = ["metric", "a", "b", "b - a", "95% interval"]
            sections += [
                f"### {comparison['benchmark']}: a = {a}, b = {b}",
                f"{comparison['method']}; {comparison['resamples']} resamples, seed {comparison.get('seed')}.",
                render_markdown_table(header, comparison_rows(comparison)),
            ]
    return sections


def build_report(
    results: Results,
    out_dir: str | Path,
    seed_groups: Mapping[str, Sequence[str]] | None = None,
    comparisons: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Path]:
    """Write report.md, table1.tex and (when MME subtasks exist) fig3_mme.png into `out_dir`;
    report.md gets the training-seed spread of `seed_groups` ({label: models}) and the paired
    `comparisons` (`load_comparisons`) in sections of their own.

    Raises:
        MissingExtraError: a figure to draw without matplotlib (checked before anything is written).
    """
    subtasks = mme_subtask_scores(results)
    if subtasks:
        require_extra("llava.eval.report (its Figure 3)", "eval", "matplotlib")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    header, rows = table1_header(), table1_rows(results)
    mme_header, mme_rows = ["model", "MME perception", "MME cognition"], mme_total_rows(results)
    written = {"latex": out_dir / "table1.tex"}
    written["latex"].write_text(
        render_latex_table(
            header, rows, "Table 1: rows marked (paper) or (authors 2026) are published numbers."
        ),
        encoding="utf-8",
    )
    sections = [
        "# Evaluation report",
        "Rows marked (paper) are the numbers the paper reports, rows marked (authors 2026) those of the "
        "authors' 2026 release (their retrained model against official LLaVA-1.5 checkpoints); the "
        "others were measured here. "
        f"{MISSING} = not available; (partial: ...) = a score over part of its benchmark.",
        "## Table 1",
        render_markdown_table(header, rows),
        "## MME totals",
        render_markdown_table(mme_header, mme_rows),
        *uncertainty_sections(results, seed_groups or {}, comparisons),
    ]
    if subtasks:
        written["figure"] = draw_figure3(subtasks, out_dir / "fig3_mme.png")
        sections += ["## Figure 3: MME subtasks", "![MME subtasks](fig3_mme.png)"]
    else:
        logger.warning("no MME subtask scores in the results; Figure 3 not drawn")
    written["markdown"] = out_dir / "report.md"
    written["markdown"].write_text("\n\n".join(sections) + "\n", encoding="utf-8")
    for kind, path in written.items():
        logger.info("wrote %s: %s", kind, path)
    return written


def main(argv: Sequence[str] | None = None) -> dict[str, Path]:
    parser = argparse.ArgumentParser(description="Table 1 and Figure 3 from scorer results")
    parser.add_argument("--results-dir", required=True, help="<dir>/<model>/<bench>.json")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument(
        "--seed-group",
        action="append",
        default=[],
        metavar="LABEL=MODEL,MODEL,...",
        help="result folders of one model trained with different seeds: adds their mean and sd (repeatable)",
    )
    parser.add_argument(
        "--comparison",
        action="append",
        default=[],
        help="a llava.eval.compare --results-json file, or a folder of them: adds its intervals (repeatable)",
    )
    args = parser.parse_args(argv)
    try:
        seed_groups = dict(parse_seed_group(text) for text in args.seed_group)
    except ValueError as err:
        parser.error(str(err))
    comparisons = load_comparisons(args.comparison)
    return build_report(load_results(args.results_dir), args.out, seed_groups, comparisons)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    run_command(main)
