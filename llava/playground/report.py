"""The playground's report (`report.md`, `report.png`) from the stages' recorded results: the scorers'
numbers as they are, arranged, with the chance levels next to them."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from statistics import mean, stdev

import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

from llava.constants import IMAGE_TOKEN_INDEX
from llava.data.records import build_conversation, load_records
from llava.eval import eval_mme
from llava.eval.report import Row, draw_figure3, render_markdown_table
from llava.mm_utils import tokenize_conversation
from llava.playground import tasks
from llava.playground.datasets import PlaygroundData, read_sizes
from llava.playground.tokenizer import CONV_TEMPLATE

PANELS = (("perception", tasks.PERCEPTION_CATEGORIES), ("cognition", tasks.COGNITION_CATEGORIES))
CHANCE = eval_mme.GUESSING


def n_parameters(auto_class, config) -> int:
    """Exact parameter count of the model `config` describes, built on the meta device (no memory)."""
    with torch.device("meta"):
        return sum(p.numel() for p in auto_class.from_config(config).parameters())


def mean_tokens(json_path: Path, tokenizer, template: str, limit: int = 500) -> tuple[float, float]:
    """Average (text tokens, images) per sample of the first `limit` records of a LLaVA-format
    file, tokenised as training tokenises them."""
    records = load_records(json_path)[:limit]
    ids = [tokenize_conversation(build_conversation(r, template), tokenizer)[0] for r in records]
    images = [sample.count(IMAGE_TOKEN_INDEX) for sample in ids]
    return mean(len(s) - n for s, n in zip(ids, images, strict=True)), mean(images)


def sample_flops(text_tokens: float, images: float, image_tokens: int, n_llm: int, n_vis: int) -> float:
    """Training FLOPs of one sample: forward + backward through the whole LLM, 4 N_llm per position
    (LoRA and the fusion branch at layer 0, or the projector, need gradients below every layer), and
    forward through the frozen tower, 2 N_vis per patch. Trainable parameters are small and left out."""
    return 4 * n_llm * (text_tokens + images * image_tokens) + 2 * n_vis * images * image_tokens


def _fmt(values: list[float], digits: int = 1) -> str:
    """One value, or mean ± standard deviation over seeds."""
    if len(values) < 2:
        return f"{values[0]:.{digits}f}" if values else "-"
    return f"{mean(values):.{digits}f} ± {stdev(values):.{digits}f}"


def _mme_cell(row: dict, category: str, images: int) -> str:
    """score (acc / acc+), margin over chance, and the largest p-value over seeds."""
    score = row["score", category]
    worst = max(eval_mme.guessing_p_value(s, images) for s in score)
    p = "p < 1e-9" if worst < 1e-9 else f"p {worst:.3f}" if worst >= 1e-3 else f"p {worst:.0e}"
    acc, plus = (_fmt(row[kind, category], 0) for kind in ("acc", "acc_plus"))
    return f"{_fmt(score)} ({acc} / {plus}), {_fmt([s - CHANCE['score'] for s in score])}, {p}"


def _collect(runs: list[dict]) -> dict:
    """Per pipeline label, in run order: lists over seeds of every number the tables show."""
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
        row["align_samples"].append(sum(s["samples"] for s in stages if s["align"]))
        row["eval_time"].append(run["eval"]["wall_time_s"])
    return table


def write_report(results: dict, output_dir: Path, llm: Path, vision: Path) -> Path:
    """Write `report.md` and `report.png` of `results` into `output_dir`; returns the markdown's path."""
    runs = results["runs"]
    table = _collect(runs)
    labels, rows = list(table), list(table.values())
    llm_config, vision_config = AutoConfig.from_pretrained(llm), AutoConfig.from_pretrained(vision)
    n_llm, n_vis = n_parameters(AutoModelForCausalLM, llm_config), n_parameters(AutoModel, vision_config)
    image_tokens = (vision_config.image_size // vision_config.patch_size) ** 2
    tokenizer = AutoTokenizer.from_pretrained(llm)
    data = PlaygroundData.at(results["data"])
    sizes = read_sizes(data.root)
    digits, images = sizes.digits, sizes.mme_images_per_category
    instruct = mean_tokens(data.instruct_json, tokenizer, CONV_TEMPLATE)
    captions = mean_tokens(data.pretrain_json, tokenizer, "plain")
    chance, short_chance = CHANCE["score"], tasks.short_answer_chance(digits)
    mme_rows, vqa_rows = [], []
    for c in tasks.CATEGORIES:
        mme_rows.append(Row(c, (f"{chance:.0f}", *(_mme_cell(r, c, images) for r in rows))))
        vqa_rows.append(Row(c, (f"{100 * short_chance[c]:.0f}", *(_fmt(r["vqa", c]) for r in rows))))
    for total, names in PANELS:
        cells = [_fmt(r["mme_totals", total]) for r in rows]
        mme_rows.append(Row(f"**{total}** (max {200 * len(names)})", (f"{chance * len(names):.0f}", *cells)))
    chat, align = (sample_flops(*mean, image_tokens, n_llm, n_vis) for mean in (instruct, captions))
    cost_rows = []
    for label, row in table.items():
        samples, aligned = row["samples"], row["align_samples"]
        flops = [(s - a) * chat + a * align for s, a in zip(samples, aligned, strict=True)]
        cells = [f"{_fmt(samples, 0)} ({_fmt(aligned, 0)})"]
        cells += [_fmt(row[key], 0) for key in ("steps", "wall_time_s", "eval_time")]
        cost_rows.append(Row(label, (*cells, f"{mean(flops):.2e}")))
    cost_header = ["pipeline", "samples seen (alignment)", "optimizer steps", "train wall time (s)"]
    cost_header += ["eval wall time (s)", "est. train FLOPs"]
    commands = [c for run in runs for c in [s["command"] for s in run["stages"]] + run["eval"]["commands"]]
    sections = [
        f"# Playground report: preset `{results['preset']}`",
        f"Backbones: `{results['backbones']}` (LLM {n_llm / 1e6:.2f}M parameters, vision tower "
        f"{n_vis / 1e6:.2f}M, {image_tokens} image positions). Data: `{results['data']}` (digits "
        f"{', '.join(map(str, digits))}). Seeds: {sorted({r['seed'] for r in runs})}.",
        "## MME-style yes/no benchmark (score = acc x 100 + acc+ x 100, max 200 per category)",
        f"Chance: acc {100 * CHANCE['acc']:.0f}, acc+ {100 * CHANCE['acc_plus']:.0f}, score {chance:.0f}. "
        "Cells: score (acc / acc+), margin = score - chance, p = the chance of a score at least this high "
        "by guessing every answer with a fair coin (exact, one-sided; "
        f"{images} images per category; the largest over seeds).",
        render_markdown_table(["category", "chance", *labels], mme_rows),
        "## Short-answer VQA (exact match, %)",
        render_markdown_table(["category", "chance", *labels], vqa_rows),
        "## Cost",
        "Estimated training FLOPs = samples x (4 N_llm x positions + 2 N_vis x image patches) "
        "(forward and backward through the LLM, forward through the frozen tower); average positions per "
        f"sample: instruction {instruct[0]:.0f} text + {instruct[1]:.2f} images, captions "
        f"{captions[0]:.0f} text + {captions[1]:.2f} images.",
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
