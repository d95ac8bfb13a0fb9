"""The playground's report (`report.md`, `report.png`) from the stages' recorded results: the scorers'
numbers as they are, arranged, with the chance levels next to them."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from statistics import mean, stdev

import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from llava.environment import environment_line
from llava.eval import eval_mme
from llava.eval.report import Row, draw_figure3, render_markdown_table
from llava.playground import tasks
from llava.playground.claims import claims, run_name, spread_rows
from llava.playground.datasets import read_sizes

PANELS = (("perception", tasks.PERCEPTION_CATEGORIES), ("cognition", tasks.COGNITION_CATEGORIES))


def n_parameters(auto_class, config) -> int:
    """Exact parameter count of the model `config` describes, built on the meta device (no memory)."""
    with torch.device("meta"):
        return sum(p.numel() for p in auto_class.from_config(config).parameters())


def _fmt(values: list[float], digits: int = 1) -> str:
    """One value, or mean ± standard deviation over runs."""
    if len(values) < 2:
        return f"{values[0]:.{digits}f}" if values else "-"
    return f"{mean(values):.{digits}f} ± {stdev(values):.{digits}f}"


def _mme_cell(row: dict, category: str, images: int) -> str:
    """score (acc / acc+), margin over chance, and the largest p-value over runs."""
    score = row["score", category]
    worst = max(eval_mme.guessing_p_value(s, images) for s in score)
    p = "p < 1e-9" if worst < 1e-9 else f"p {worst:.3f}" if worst >= 1e-3 else f"p {worst:.0e}"
    acc, plus = (_fmt(row[kind, category], 0) for kind in ("acc", "acc_plus"))
    return f"{_fmt(score)} ({acc} / {plus}), {_fmt([s - eval_mme.GUESSING['score'] for s in score])}, {p}"


def _collect(runs: list[dict]) -> dict:
    """Per pipeline label, in run order: lists over runs of every number the tables show."""
    table: dict = defaultdict(lambda: defaultdict(list))
    for run in runs:
        scores, row, stages = run["eval"]["scores"], table[run["label"]], run["stages"]
        for category, mme in scores["mme"].items():
            for kind, scale in (("score", 1), ("acc", 100), ("acc_plus", 100)):
                row[kind, category].append(scale * mme[kind])
        for group in ("vqa", "mme_totals"):
            for key, value in scores[group].items():
                row[group, key].append(value)
        for key in ("samples", "steps", "wall_time_s"):
            row[key].append(sum(s[key] for s in stages))
            row["align", key].append(sum(s[key] for s in stages if s["align"]))
        row["eval_time"].append(run["eval"]["wall_time_s"])
    return table


def _environments(runs: list[dict]) -> str:
    """Each distinct environment the runs ran in, with the runs it holds."""
    where: dict[str, list[str]] = defaultdict(list)
    for run in runs:
        environment = run.get("environment")
        where[environment_line(environment) if environment else "not recorded"].append(run_name(run))
    return "\n".join(f"- {line}: {', '.join(dict.fromkeys(names))}" for line, names in where.items())


def _spread_section(runs: list[dict]) -> list[str]:
    """Each MME-style cell's mean, minimum, median and maximum over the runs, when a model ran more than once."""
    if len({run["label"] for run in runs}) == len(runs):
        return []
    rows = [
        Row(label, (category, *(f"{v:.1f}" for v in values)))
        for label, category, *values in spread_rows(runs)
    ]
    return [
        f"### Each cell over the runs ({len({run_name(r) for r in runs})} runs per model)",
        render_markdown_table(["model", "category", "mean", "min", "median", "max"], rows),
    ]


def write_report(results: dict, output_dir: Path, llm: Path, vision: Path) -> Path:
    """Write `report.md` and `report.png` of `results` into `output_dir`; returns the markdown's path."""
    runs = results["runs"]
    table = _collect(runs)
    labels, rows = list(table), list(table.values())
    llm_config, vision_config = AutoConfig.from_pretrained(llm), AutoConfig.from_pretrained(vision)
    n_llm, n_vis = n_parameters(AutoModelForCausalLM, llm_config), n_parameters(AutoModel, vision_config)
    image_tokens = (vision_config.image_size // vision_config.patch_size) ** 2
    sizes = read_sizes(results["data"])
    digits, images = sizes.digits, sizes.mme_images_per_category
    guessing, short_chance = eval_mme.GUESSING, tasks.short_answer_chance(digits)
    chance = guessing["score"]
    mme_rows, vqa_rows = [], []
    for c in tasks.CATEGORIES:
        mme_rows.append(Row(c, (f"{chance:.0f}", *(_mme_cell(r, c, images) for r in rows))))
        vqa_rows.append(Row(c, (f"{100 * short_chance[c]:.0f}", *(_fmt(r["vqa", c]) for r in rows))))
    for total, names in PANELS:
        cells = [_fmt(r["mme_totals", total]) for r in rows]
        mme_rows.append(Row(f"**{total}** (max {200 * len(names)})", (f"{chance * len(names):.0f}", *cells)))
    cost_rows = []
    for label, row in table.items():
        cells = [
            f"{_fmt(row[key], 0)} ({_fmt(row['align', key], 0)})"
            for key in ("samples", "steps", "wall_time_s")
        ]
        cost_rows.append(Row(label, (*cells, _fmt(row["eval_time"], 0))))
    cost_header = ["pipeline", "samples seen", "optimizer steps", "train wall time (s)", "eval wall time (s)"]
    commands = [c for run in runs for c in [s["command"] for s in run["stages"]] + run["eval"]["commands"]]
    sections = [
        f"# Playground report: preset `{results['preset']}`",
        f"Backbones: `{results['backbones']}` (LLM {n_llm / 1e6:.2f}M parameters, vision tower "
        f"{n_vis / 1e6:.2f}M, {image_tokens} image positions). Data: `{results['data']}` (digits "
        f"{', '.join(map(str, digits))}). Seeds: {sorted({r['seed'] for r in runs})}; runs per model: "
        f"{len({run_name(r) for r in runs})}.",
        "## Environment",
        _environments(runs),
        "## Claims",
        "\n".join(claim.line() for claim in claims(runs)),
        "## MME-style yes/no benchmark (score = acc x 100 + acc+ x 100, max 200 per category)",
        f"Chance: acc {100 * guessing['acc']:.0f}, acc+ {100 * guessing['acc_plus']:.0f}, "
        f"score {chance:.0f}. Cells: score (acc / acc+), margin = score - chance, p = the chance of a "
        "score at least this high by guessing every answer with a fair coin (exact, one-sided; "
        f"{images} images per category; the largest over runs).",
        render_markdown_table(["category", "chance", *labels], mme_rows),
        *_spread_section(runs),
        "## Short-answer VQA (exact match, %)",
        render_markdown_table(["category", "chance", *labels], vqa_rows),
        "## Cost",
        "Training: all stages, in brackets the alignment stage's share (LLaVA-1.5's stage 1).",
        render_markdown_table(cost_header, cost_rows),
        f"Data generation: {results['data_time_s']:.0f} s.",
        "## Commands run",
        "\n".join(["```", *commands, "```"]),
    ]
    path = output_dir / "report.md"
    path.write_text("\n\n".join(sections) + "\n")
    means = {label: {c: mean(r["score", c]) for c in tasks.CATEGORIES} for label, r in table.items()}
    titled = [(f"{total.capitalize()} (MME-style score)", names) for total, names in PANELS]
    draw_figure3(means, output_dir / "report.png", panels=titled, reference=("chance", chance))
    return path
