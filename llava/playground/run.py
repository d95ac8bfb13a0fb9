"""The playground's comparison, stage by stage, cached and resumable.

Every stage runs the project's real entry points, with the flags a 7B user passes:
`llava.train.train` for training, `llava.eval.model_vqa_loader` for answers, `llava.eval.eval_mme`
and `llava.eval.eval_exact_match` for scores. A stage writes `DONE.json` (wall time, command,
result, settings) last and atomically; a re-run skips stages that have it with the same settings
and refuses ones finished with other settings, and a stage directory without it is an
interrupted stage, removed and run again from scratch.

Layout of `--output-dir`:

    data/                               the synthetic world (llava.playground.datasets)
    <pipeline>/seed<k>/<stage>/         checkpoints of each training stage
    <pipeline>/seed<k>/eval/            answers and scores
    report.md, report.png, results.json
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shlex
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from tqdm.auto import tqdm
from transformers import AutoTokenizer

from llava.playground import backbones as playground_backbones
from llava.playground.datasets import PlaygroundData, build_data
from llava.playground.presets import Preset
from llava.playground.tasks import COGNITION_CATEGORIES, PERCEPTION_CATEGORIES

logger = logging.getLogger(__name__)

DONE = "DONE.json"


@dataclasses.dataclass(frozen=True)
class TrainStage:
    """One training run of a pipeline: its name and the flags that differ between pipelines."""

    name: str
    flags: tuple[str, ...]
    align: bool = False  # LLaVA-1.5's stage 1: captions, template `plain`, projector only


@dataclasses.dataclass(frozen=True)
class Pipeline:
    name: str
    label: str
    stages: tuple[TrainStage, ...]


_FUSION = ("--model_type", "fusion_llama", "--mm_vision_select_layer", "-1", "--fusion_dropout", "0.1")
_LLAVA = (
    "--model_type",
    "llava_llama",
    "--mm_projector_type",
    "mlp2x_gelu",
    "--mm_vision_select_layer",
    "-2",
)


def _fusion(layers: str = "0", *extra: str) -> tuple[str, ...]:
    return (*_FUSION, "--layer_ids_to_inject", layers, "--lora_layer_ids_to_skip", layers, *extra)


PIPELINES: dict[str, Pipeline] = {
    "inverse_llava": Pipeline("inverse_llava", "Inverse-LLaVA", (TrainStage("finetune", _fusion()),)),
    "llava_1_5": Pipeline(
        "llava_1_5",
        "LLaVA-1.5",
        (
            TrainStage("align", (*_LLAVA, "--tune_mm_mlp_adapter", "True"), align=True),
            TrainStage("finetune", _LLAVA),
        ),
    ),
    "llava_no_align": Pipeline(
        "llava_no_align", "LLaVA-1.5 w/o alignment", (TrainStage("finetune", _LLAVA),)
    ),
    "inverse_llava_hd": Pipeline(
        "inverse_llava_hd",
        "Inverse-LLaVA-HD",
        (TrainStage("finetune", (*_fusion(), "--mm_vision_select_layer", "-1,-2")),),
    ),
    "ablation_add": Pipeline(
        "ablation_add",
        "Inverse-LLaVA (add)",
        (TrainStage("finetune", _fusion("0", "--fusion_variant", "add")),),
    ),
    "ablation_gated": Pipeline(
        "ablation_gated",
        "Inverse-LLaVA (gated)",
        (TrainStage("finetune", _fusion("0", "--fusion_variant", "gated")),),
    ),
    "ablation_multi_layer": Pipeline(
        "ablation_multi_layer", "Inverse-LLaVA (layers 0,2)", (TrainStage("finetune", _fusion("0,2")),)
    ),
}


def run_stage(directory: Path, describe: str, work: Callable[[Path], dict], settings: list[str]) -> dict:
    """Run `work(directory)` unless `directory/DONE.json` says it already ran with the same
    `settings` (the stage's command-line flags); return its record. A stage finished with other
    settings (an older preset, say) is refused, never reported as this one's."""
    marker = directory / DONE
    if marker.is_file():
        record = json.loads(marker.read_text())
        if record.get("settings") != settings:
            raise FileExistsError(
                f"{directory} holds a stage run with other settings ({record.get('settings')}); wanted "
                f"{settings}. Use another --output-dir or delete it."
            )
        logger.info("%s: done earlier (%.0f s), skipped", describe, record["wall_time_s"])
        return record
    if directory.exists():
        logger.info("%s: removing the output of an interrupted run", describe)
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    start = time.perf_counter()
    record = work(directory)
    record["wall_time_s"] = time.perf_counter() - start
    record["settings"] = settings
    partial = marker.with_suffix(".tmp")
    partial.write_text(json.dumps(record, indent=2))
    os.replace(partial, marker)
    logger.info("%s: finished in %.0f s", describe, record["wall_time_s"])
    return record


def _command(module: str, argv: list[str]) -> str:
    return shlex.join(["python", "-m", module, *argv])


def train_argv(preset: Preset, data: PlaygroundData, stage: TrainStage, llm: Path, vision: Path,
               output_dir: Path, seed: int, projector: Path | None) -> list[str]:  # fmt: skip
    """The `llava.train.train` flags of one stage (the 7B scripts' flags, with a tiny budget)."""
    budget = preset.budget
    argv = [
        "--model_name_or_path", str(llm), "--vision_tower", str(vision),
        "--image_folder", str(data.image_folder), "--image_aspect_ratio", "pad",
        "--output_dir", str(output_dir), "--seed", str(seed), "--data_seed", str(seed),
        "--per_device_train_batch_size", str(budget.batch_size), "--gradient_accumulation_steps", "1",
        "--weight_decay", "0.", "--warmup_ratio", str(budget.warmup_ratio),
        "--model_max_length", str(budget.model_max_length), "--logging_steps", "10",
        "--save_strategy", "no", "--report_to", "none", "--dataloader_num_workers", "0",
        *stage.flags,
    ]  # fmt: skip
    if stage.align:
        return argv + [
            "--version", "plain", "--data_path", str(data.pretrain_json), "--lr_scheduler_type", "cosine",
            "--max_steps", str(budget.align_steps), "--learning_rate", str(budget.alignment_rate),
        ]  # fmt: skip
    argv += [
        "--version", playground_backbones.CONV_TEMPLATE, "--data_path", str(data.instruct_json),
        "--max_steps", str(budget.steps), "--learning_rate", str(budget.learning_rate),
        "--lora_enable", "True", "--lora_r", str(budget.lora_r), "--lora_alpha", str(budget.lora_alpha),
        "--lora_dropout", str(budget.lora_dropout), "--train_sampling_strategy", "group_by_length",
    ]  # fmt: skip
    if budget.schedule == "wsd":
        argv += [
            "--lr_scheduler_type", "warmup_stable_decay",
            "--lr_scheduler_kwargs", json.dumps({"num_decay_steps": budget.decay_steps}),
        ]  # fmt: skip
    else:
        argv += ["--lr_scheduler_type", "cosine"]
    if "llava_llama" in stage.flags:
        argv += ["--mm_projector_lr", str(budget.projector_lr)]
    if projector is not None:
        argv += ["--pretrain_mm_mlp_adapter", str(projector)]
    return argv


def train_pipeline(preset: Preset, data: PlaygroundData, pipeline: Pipeline, llm: Path, vision: Path,
                   seed_dir: Path, seed: int) -> list[dict]:  # fmt: skip
    """Train every stage of `pipeline`; returns the stages' records."""
    from llava.train.train import main as train_main

    records, projector = [], None
    for stage in pipeline.stages:
        directory = seed_dir / stage.name
        argv = train_argv(preset, data, stage, llm, vision, directory, seed, projector)

        def work(directory: Path, stage=stage, argv=argv) -> dict:
            summary = train_main(argv)
            samples = summary["global_step"] * preset.budget.batch_size
            return {"command": _command("llava.train.train", argv), "steps": summary["global_step"],
                    "samples": samples, "train_loss": summary["train_loss"], "align": stage.align}  # fmt: skip

        records.append(run_stage(directory, f"{pipeline.name}/seed{seed}/{stage.name}", work, argv))
        if stage.align:
            projector = directory / "mm_projector.safetensors"
    return records


def evaluate(preset: Preset, data: PlaygroundData, checkpoint: Path, llm: Path, eval_dir: Path,
             describe: str) -> dict:  # fmt: skip
    """Answers through the short-answer runner, scored by the MME and exact-match scorers."""
    from llava.eval import eval_exact_match, eval_mme, model_vqa_loader

    common = ["--model-path", str(checkpoint), "--model-base", str(llm), "--conv-mode",
              playground_backbones.CONV_TEMPLATE, "--temperature", "0", "--batch-size",
              str(preset.eval_batch_size), "--max_new_tokens", str(preset.eval_max_new_tokens)]  # fmt: skip

    def work(directory: Path) -> dict:
        commands, scores = [], {}
        for name, questions, images in (
            ("mme", data.mme_question_file, data.mme_image_folder),
            ("vqa", data.vqa_question_file, data.vqa_image_folder),
        ):
            argv = [*common, "--question-file", str(questions), "--image-folder", str(images),
                    "--answers-file", str(directory / f"{name}_answers.jsonl")]  # fmt: skip
            model_vqa_loader.main(argv)
            commands.append(_command("llava.eval.model_vqa_loader", argv))
        mme_argv = ["--answers-file", str(directory / "mme_answers.jsonl"), "--mme-dir", str(data.mme_gt_dir),
                    "--perception", ",".join(PERCEPTION_CATEGORIES), "--cognition", ",".join(COGNITION_CATEGORIES),
                    "--output-dir", str(directory / "mme_results")]  # fmt: skip
        mme = eval_mme.main(mme_argv)
        commands.append(_command("llava.eval.eval_mme", mme_argv))
        vqa_argv = [
            "--question-file",
            str(data.vqa_question_file),
            "--result-file",
            str(directory / "vqa_answers.jsonl"),
        ]
        vqa = eval_exact_match.main(vqa_argv)
        commands.append(_command("llava.eval.eval_exact_match", vqa_argv))
        scores["mme"] = {name: dataclasses.asdict(s) | {"score": s.score} for name, s in mme.subtasks.items()}
        scores["mme_totals"] = {"perception": mme.perception, "cognition": mme.cognition}
        scores["vqa"] = dict(vqa.categories)
        return {"commands": commands, "scores": scores}

    return run_stage(eval_dir, describe, work, common)


def run(
    preset: Preset, output_dir: Path, backbones_dir: Path | None = None, rebuild_backbones: bool = False
) -> dict:
    """Run (or resume) the whole comparison; returns the results that the report renders."""
    from llava.playground.report import write_report

    output_dir = output_dir.resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    if rebuild_backbones:
        backbones_dir = output_dir / "backbones"
        playground_backbones.main(["--output-dir", str(backbones_dir), "--seed", "0"])
    backbones_dir = Path(backbones_dir or playground_backbones.SHIPPED_BACKBONES)
    llm, vision = (
        playground_backbones.llm_path(backbones_dir),
        playground_backbones.vision_tower_path(backbones_dir),
    )
    for path in (llm, vision):
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"backbone checkpoint missing: {path} (rebuild with --rebuild-backbones)")
    playground_backbones.scene_word_ids(
        AutoTokenizer.from_pretrained(llm),
        f"the chat LM's tokenizer in {llm} (rebuild with --rebuild-backbones)",
    )

    jobs = [(name, seed) for name in preset.pipelines for seed in preset.seeds]
    progress = tqdm(total=1 + 2 * len(jobs), desc=f"playground {preset.name}", unit="stage")
    data_start = time.perf_counter()
    data = build_data(output_dir / "data", preset=preset.data, seed=0)
    progress.update()
    results = {"preset": preset.name, "backbones": str(backbones_dir), "data_time_s": time.perf_counter() - data_start,
               "data": str(data.root), "runs": []}  # fmt: skip
    for name, seed in jobs:
        pipeline = PIPELINES[name]
        seed_dir = output_dir / name / f"seed{seed}"
        stages = train_pipeline(preset, data, pipeline, llm, vision, seed_dir, seed)
        progress.update()
        evaluation = evaluate(preset, data, seed_dir / pipeline.stages[-1].name, llm, seed_dir / "eval",
                              f"{name}/seed{seed}/eval")  # fmt: skip
        progress.update()
        results["runs"].append({"pipeline": name, "label": pipeline.label, "seed": seed, "stages": stages,
                                "eval": evaluation})  # fmt: skip
    progress.close()
    (output_dir / "results.json").write_text(json.dumps(results, indent=2))
    write_report(results, output_dir, llm=llm, vision=vision)
    logger.info("report: %s", output_dir / "report.md")
    return results
