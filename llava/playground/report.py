"""The playground's report: `report.md` and `report.png`, from the stages' recorded results.
Numbers are copied from the scorers' outputs as they are; the report only arranges them and
states the chance levels next to them."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path

from transformers import AutoConfig, AutoTokenizer, CLIPVisionConfig

from llava.conversation import get_conv_template
from llava.eval.scoring_io import read_jsonl
from llava.mm_utils import tokenize_conversation
from llava.playground.datasets import PlaygroundData, read_sizes
from llava.playground.tasks import (
    COGNITION_CATEGORIES,
    PERCEPTION_CATEGORIES,
    YES_NO_CHANCE,
    short_answer_chance,
    yes_no_p_value,
)
from llava.playground.tokenizer import CONV_TEMPLATE

CATEGORIES = PERCEPTION_CATEGORIES + COGNITION_CATEGORIES


def _llama_params(config) -> int:
    """Parameters of a Llama decoder from its config (embeddings and LM head included)."""
    d, inter, layers, vocab = (
        config.hidden_size,
        config.intermediate_size,
        config.num_hidden_layers,
        config.vocab_size,
    )
    kv = config.num_key_value_heads * (d // config.num_attention_heads)
    per_layer = d * (2 * d + 2 * kv) + 3 * d * inter + 2 * d
    return layers * per_layer + 2 * vocab * d + d


def _clip_params(config) -> int:
    d, inter, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    patches = (config.image_size // config.patch_size) ** 2
    return layers * (4 * d * d + 2 * d * inter + 4 * d) + 3 * config.patch_size**2 * d + (patches + 1) * d


def mean_tokens(json_path: Path, tokenizer, template: str, limit: int = 500) -> tuple[float, float]:
    """Average (text tokens, images) per sample of a LLaVA-format file (first `limit` records)."""
    records = json.loads(Path(json_path).read_text())[:limit]
    texts, images = [], []
    for record in records:
        conv = get_conv_template(template)
        for i, turn in enumerate(record["conversations"]):
            conv.append_message(conv.roles[i % 2], turn["value"])
        ids, _ = tokenize_conversation(conv, tokenizer)
        images.append(sum(1 for t in ids if t < 0))
        texts.append(len(ids) - images[-1])
    return statistics.mean(texts), statistics.mean(images)


def flops_estimate(
    samples: int, text_tokens: float, images: float, image_tokens: int, n_llm: int, n_vis: int
) -> float:
    """Training FLOPs: forward + backward through the whole LLM (LoRA and the fusion branch at
    layer 0, or the projector, need gradients below every layer): 4 N_llm per sequence position,
    and a forward-only frozen tower: 2 N_vis per patch. Trainable parameters are small and left out."""
    positions = text_tokens + images * image_tokens
    return samples * (4 * n_llm * positions + 2 * n_vis * images * image_tokens)


def _fmt(values: list[float], digits: int = 1) -> str:
    """One value, or mean ± standard deviation over seeds."""
    if len(values) < 2:
        return f"{values[0]:.{digits}f}" if values else "-"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def mme_images_per_category(question_file: Path) -> dict[str, int]:
    """Images per category of an MME-style question file (two questions per image)."""
    images: dict[str, set[str]] = defaultdict(set)
    for row in read_jsonl(question_file):
        images[row["category"]].add(row["image"])
    return {category: len(names) for category, names in images.items()}


def _range(values) -> str:
    low, high = min(values), max(values)
    return f"{low}" if low == high else f"{low}-{high}"


def _p(values: list[float]) -> str:
    worst = max(values)
    return "p < 1e-9" if worst < 1e-9 else f"p {worst:.3f}" if worst >= 1e-3 else f"p {worst:.0e}"


def _header(labels: list[str]) -> list[str]:
    return ["| category | chance | " + " | ".join(labels) + " |", "|---|---|" + "---|" * len(labels)]


def _collect(results: dict) -> tuple[list[str], dict]:
    """Per pipeline label: lists over seeds of every number the tables show."""
    labels: list[str] = []
    table: dict = defaultdict(lambda: defaultdict(list))
    for run in results["runs"]:
        label = run["label"]
        if label not in labels:
            labels.append(label)
        scores, row = run["eval"]["scores"], table[label]
        for category, mme in scores["mme"].items():
            row["mme", category].append(mme["score"])
            row["acc", category].append(100 * mme["acc"])
            row["acc_plus", category].append(100 * mme["acc_plus"])
        for category, value in scores["vqa"].items():
            row["vqa", category].append(value)
        for total in ("perception", "cognition"):
            row["total", total].append(scores["mme_totals"][total])
        stages = run["stages"]
        row["samples"].append(sum(s["samples"] for s in stages))
        row["align_samples"].append(sum(s["samples"] for s in stages if s["align"]))
        row["steps"].append(sum(s["steps"] for s in stages))
        row["train_time"].append(sum(s["wall_time_s"] for s in stages))
        row["eval_time"].append(run["eval"]["wall_time_s"])
    return labels, table


def write_report(results: dict, output_dir: Path, llm: Path, vision: Path) -> Path:
    labels, table = _collect(results)
    llm_config = AutoConfig.from_pretrained(llm)
    vision_config = CLIPVisionConfig.from_pretrained(vision)
    image_tokens = (vision_config.image_size // vision_config.patch_size) ** 2
    tokenizer = AutoTokenizer.from_pretrained(llm)
    n_llm, n_vis = _llama_params(llm_config), _clip_params(vision_config)
    data = PlaygroundData.at(results["data"])
    digits = read_sizes(data.root).digits
    short_chance = short_answer_chance(digits)
    images = mme_images_per_category(data.mme_question_file)
    instruct = mean_tokens(data.instruct_json, tokenizer, CONV_TEMPLATE)
    captions = mean_tokens(data.pretrain_json, tokenizer, "plain")

    lines = [
        f"# Playground report: preset `{results['preset']}`",
        "",
        f"Backbones: `{results['backbones']}` (LLM {n_llm / 1e6:.2f}M parameters, vision tower "
        f"{n_vis / 1e6:.2f}M, {image_tokens} image positions). Data: `{results['data']}` (digits "
        f"{', '.join(map(str, digits))}). "
        f"Seeds: {sorted({r['seed'] for r in results['runs']})}.",
        "",
        "## MME-style yes/no benchmark (score = acc x 100 + acc+ x 100, max 200 per category)",
        "",
        f"Chance: acc {100 * YES_NO_CHANCE['acc']:.0f}, acc+ {100 * YES_NO_CHANCE['acc_plus']:.0f}, "
        f"score {YES_NO_CHANCE['score']:.0f}. Cells: score (acc / acc+), margin = score - chance, p = the "
        "chance of a score at least this high by guessing every answer with a fair coin (exact, one-sided; "
        f"{_range(images.values())} images per category; the largest over seeds).",
        "",
        *_header(labels),
    ]
    for category in CATEGORIES:
        cells = []
        for label in labels:
            score = table[label]["mme", category]
            acc, plus = table[label]["acc", category], table[label]["acc_plus", category]
            margin = [s - YES_NO_CHANCE["score"] for s in score]
            p = _p([yes_no_p_value(s, images[category]) for s in score])
            cells.append(f"{_fmt(score)} ({_fmt(acc, 0)} / {_fmt(plus, 0)}), {_fmt(margin)}, {p}")
        lines.append(f"| {category} | {YES_NO_CHANCE['score']:.0f} | " + " | ".join(cells) + " |")
    for total, names in (("perception", PERCEPTION_CATEGORIES), ("cognition", COGNITION_CATEGORIES)):
        chance = YES_NO_CHANCE["score"] * len(names)
        cells = [_fmt(table[label]["total", total]) for label in labels]
        lines.append(f"| **{total}** (max {200 * len(names)}) | {chance:.0f} | " + " | ".join(cells) + " |")

    lines += ["", "## Short-answer VQA (exact match, %)", "", *_header(labels)]
    for category in CATEGORIES:
        chance = 100 * short_chance[category]
        cells = [_fmt(table[label]["vqa", category]) for label in labels]
        lines.append(f"| {category} | {chance:.0f} | " + " | ".join(cells) + " |")

    lines += [
        "",
        "## Cost",
        "",
        "Estimated training FLOPs = samples x (4 N_llm x positions + 2 N_vis x image patches) "
        f"(forward and backward through the LLM, forward through the frozen tower); average positions per "
        f"sample: instruction {instruct[0]:.0f} text + {instruct[1]:.2f} images, captions "
        f"{captions[0]:.0f} text + {captions[1]:.2f} images.",
        "",
        "| pipeline | samples seen (alignment) | optimizer steps | train wall time (s) | eval wall time (s) | est. train FLOPs |",
        "|---|---|---|---|---|---|",
    ]
    for label in labels:
        row = table[label]
        samples, align = row["samples"], row["align_samples"]
        flops = [
            flops_estimate(s - a, *instruct, image_tokens, n_llm, n_vis)
            + flops_estimate(a, *captions, image_tokens, n_llm, n_vis)
            for s, a in zip(samples, align, strict=True)
        ]
        lines.append(
            f"| {label} | {_fmt(samples, 0)} ({_fmt(align, 0)}) | {_fmt(row['steps'], 0)} | "
            f"{_fmt(row['train_time'], 0)} | {_fmt(row['eval_time'], 0)} | "
            f"{statistics.mean(flops):.2e} |"
        )
    lines += ["", f"Data generation: {results['data_time_s']:.0f} s.", "", "## Commands run", "", "```"]
    for run in results["runs"]:
        lines += [stage["command"] for stage in run["stages"]] + run["eval"]["commands"]
    lines += ["```", ""]
    path = output_dir / "report.md"
    path.write_text("\n".join(lines))
    _plot(labels, table, output_dir / "report.png")
    return path


def _plot(labels: list[str], table: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ratios = [len(PERCEPTION_CATEGORIES), len(COGNITION_CATEGORIES)]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2), gridspec_kw={"width_ratios": ratios})
    width = 0.8 / max(1, len(labels))
    for ax, names, title in zip(
        axes, (PERCEPTION_CATEGORIES, COGNITION_CATEGORIES), ("Perception", "Cognition"), strict=True
    ):
        for i, label in enumerate(labels):
            means = [statistics.mean(table[label]["mme", n] or [0.0]) for n in names]
            xs = [j + (i - (len(labels) - 1) / 2) * width for j in range(len(names))]
            ax.bar(xs, means, width=width, label=label)
        ax.axhline(YES_NO_CHANCE["score"], color="black", linestyle="--", linewidth=1, label="chance")
        ax.set_xticks(range(len(names)), names, rotation=20)
        ax.set_ylim(0, 200)
        ax.set_title(f"{title} (MME-style score)")
    axes[0].set_ylabel("acc x 100 + acc+ x 100")
    axes[1].legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
