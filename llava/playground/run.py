"""The playground's comparison: the data, each pipeline's training stages and its evaluation,
each a stage of `llava.playground.stages` (cached, resumable), run through the project's real
entry points with the flags a 7B user passes (`train_argv`): `llava.train.train`,
`llava.eval.model_vqa_loader`, `llava.eval.eval_mme` and `llava.eval.eval_exact_match`. The
output folder's layout is in docs/playground.md.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shlex
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from llava.environment import cpu_capability, describe_environment
from llava.playground import backbones as playground_backbones
from llava.playground.datasets import PlaygroundData, build_data
from llava.playground.presets import PIPELINES, Budget, Pipeline, Preset, TrainStage
from llava.playground.stages import read_record, run_stage
from llava.playground.tasks import COGNITION_CATEGORIES, PERCEPTION_CATEGORIES
from llava.playground.tokenizer import CONV_TEMPLATE

logger = logging.getLogger(__name__)


def to_argv(flags: dict[str, Any]) -> list[str]:
    """`{"lora_r": 16, "lora_enable": True, "layers": (0, 2)}` -> `["--lora_r", "16",
    "--lora_enable", "True", "--layers", "0,2"]`; None values are left out."""
    argv: list[str] = []
    for name, value in flags.items():
        if value is None:
            continue
        text = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
        argv += [f"--{name}", text]
    return argv


def _model_flags(pipeline: Pipeline, align: bool) -> dict[str, Any]:
    flags: dict[str, Any] = {
        "model_type": pipeline.model_type,
        "mm_vision_select_layer": pipeline.vision_layers,
    }
    if pipeline.projector:
        return flags | {"mm_projector_type": "mlp2x_gelu", "tune_mm_mlp_adapter": True if align else None}
    return flags | {
        "fusion_dropout": 0.1,
        "layer_ids_to_inject": pipeline.fusion_layers,
        "lora_layer_ids_to_skip": pipeline.fusion_layers,
        "fusion_variant": pipeline.fusion_variant,
    }


def _schedule_flags(budget: Budget, align: bool) -> dict[str, Any]:
    """LLaVA's cosine, or (instruction stages of a `wsd` budget) warmup-stable-decay."""
    if align or budget.schedule == "cosine":
        return {"lr_scheduler_type": "cosine"}
    return {
        "lr_scheduler_type": "warmup_stable_decay",
        "lr_scheduler_kwargs": json.dumps({"num_decay_steps": budget.decay_steps}),
    }


def train_argv(
    preset: Preset,
    data: PlaygroundData,
    pipeline: Pipeline,
    stage: TrainStage,
    backbones: tuple[Path, Path],
    output_dir: Path,
    seed: int,
    projector: Path | None,
) -> list[str]:
    """The `llava.train.train` flags of one stage; `backbones` is `(llm, vision tower)` and
    `projector` the aligned projector a stage after alignment starts from."""
    budget = preset.budget
    llm, vision = backbones
    flags: dict[str, Any] = {
        "model_name_or_path": llm,
        "vision_tower": vision,
        "image_folder": data.image_folder,
        "image_aspect_ratio": "pad",
        "output_dir": output_dir,
        "seed": seed,
        "data_seed": seed,
        "per_device_train_batch_size": budget.batch_size,
        "gradient_accumulation_steps": 1,
        "weight_decay": 0.0,
        "warmup_ratio": budget.warmup_ratio,
        "model_max_length": budget.model_max_length,
        "logging_steps": 10,
        "save_strategy": "no",
        "report_to": "none",
        "dataloader_num_workers": 0,
        **_model_flags(pipeline, stage.align),
        "version": "plain" if stage.align else CONV_TEMPLATE,
        "data_path": data.pretrain_json if stage.align else data.instruct_json,
        **_schedule_flags(budget, stage.align),
        "max_steps": stage.steps,
        "learning_rate": stage.learning_rate,
        "mm_projector_lr": stage.projector_lr,
        "pretrain_mm_mlp_adapter": projector,
    }
    if not stage.align:
        flags |= {
            "lora_enable": True,
            "lora_r": budget.lora_r,
            "lora_alpha": budget.lora_alpha,
            "lora_dropout": budget.lora_dropout,
            "train_sampling_strategy": "group_by_length",
        }
    return to_argv(flags)


def _command(module: str, argv: list[str]) -> str:
    return shlex.join(["python", "-m", module, *argv])


def _keyed(argv: list[str]) -> dict[str, Any]:
    """A training or evaluation stage's settings: its flags and the CPU kernels it runs under
    (another kernel family adds floats in another order, so its result is another result)."""
    return {"argv": argv, "cpu_capability": cpu_capability()}


def train_pipeline(
    preset: Preset,
    data: PlaygroundData,
    pipeline: Pipeline,
    backbones: tuple[Path, Path],
    seed_dir: Path,
    seed: int,
) -> list[dict]:
    """Train every stage of `pipeline`; returns the stages' records."""
    from llava.train.train import main as train_main

    records, projector = [], None
    for stage in pipeline.train_stages(preset.budget):
        directory = seed_dir / stage.name
        argv = train_argv(preset, data, pipeline, stage, backbones, directory, seed, projector)

        def work(directory: Path, align: bool = stage.align, argv: list[str] = argv) -> dict:
            summary = train_main(argv)
            return {
                "command": _command("llava.train.train", argv),
                "steps": summary["global_step"],
                "samples": summary["global_step"] * preset.budget.batch_size,
                "train_loss": summary["train_loss"],
                "align": align,
            }

        records.append(run_stage(directory, f"{pipeline.name}/seed{seed}/{stage.name}", work, _keyed(argv)))
        if stage.align:
            projector = directory / "mm_projector.safetensors"
    return records


def evaluate(
    preset: Preset, data: PlaygroundData, checkpoint: Path, llm: Path, eval_dir: Path, describe: str
) -> dict:
    """Answers through the short-answer runner, scored by the MME and exact-match scorers."""
    from llava.eval import eval_exact_match, eval_mme, model_vqa_loader

    common = {
        "model-path": checkpoint,
        "model-base": llm,
        "conv-mode": CONV_TEMPLATE,
        "temperature": 0,
        "batch-size": preset.eval_batch_size,
        "max_new_tokens": preset.eval_max_new_tokens,
    }

    def work(directory: Path) -> dict:
        answers = {name: directory / f"{name}_answers.jsonl" for name in ("mme", "vqa")}
        mme_files = {"question-file": data.mme_question_file, "image-folder": data.mme_dir}
        vqa_files = {"question-file": data.vqa_question_file, "image-folder": data.vqa_image_folder}
        mme_truth = {"answers-file": answers["mme"], "mme-dir": data.mme_dir}
        categories = {"perception": PERCEPTION_CATEGORIES, "cognition": COGNITION_CATEGORIES}
        steps = [
            (model_vqa_loader, common | mme_files | {"answers-file": answers["mme"]}),
            (model_vqa_loader, common | vqa_files | {"answers-file": answers["vqa"]}),
            (eval_mme, mme_truth | categories | {"output-dir": directory / "mme_results"}),
            (eval_exact_match, {"question-file": data.vqa_question_file, "result-file": answers["vqa"]}),
        ]
        *_, mme, vqa = [module.main(to_argv(flags)) for module, flags in steps]
        scores = {
            "mme": {name: dataclasses.asdict(s) | {"score": s.score} for name, s in mme.subtasks.items()},
            "mme_totals": {"perception": mme.perception, "cognition": mme.cognition},
            "vqa": dict(vqa.categories),
        }
        return {"commands": [_command(m.__name__, to_argv(flags)) for m, flags in steps], "scores": scores}

    return run_stage(eval_dir, describe, work, _keyed(to_argv(common)))


def run(preset: Preset, output_dir: Path, backbones_dir: str | os.PathLike) -> dict:
    """Run (or resume) the whole comparison on the backbones in `backbones_dir`; returns the
    results that the report renders."""
    from llava.playground.report import write_report

    llm, vision = playground_backbones.check_backbones(backbones_dir)
    output_dir = output_dir.resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(name, seed) for name in preset.pipelines for seed in preset.seeds]
    progress = tqdm(total=1 + 2 * len(jobs), desc=f"playground {preset.name}", unit="stage")
    data = build_data(output_dir / "data", preset.data, seed=0)
    progress.update()
    environment = describe_environment()
    results = {
        "preset": preset.name,
        "backbones": str(llm.parent),
        "data_time_s": read_record(data.root)["wall_time_s"],
        "data": str(data.root),
        "runs": [],
    }
    for name, seed in jobs:
        pipeline = PIPELINES[name]
        seed_dir = output_dir / name / f"seed{seed}"
        stages = train_pipeline(preset, data, pipeline, (llm, vision), seed_dir, seed)
        progress.update()
        checkpoint = seed_dir / pipeline.train_stages(preset.budget)[-1].name
        evaluation = evaluate(preset, data, checkpoint, llm, seed_dir / "eval", f"{name}/seed{seed}/eval")
        progress.update()
        results["runs"].append(
            {
                "pipeline": name,
                "label": pipeline.label,
                "seed": seed,
                "environment": environment,
                "stages": stages,
                "eval": evaluation,
            }
        )
    progress.close()
    (output_dir / "results.json").write_text(json.dumps(results, indent=2))
    write_report(results, output_dir, llm=llm, vision=vision)
    logger.info("report: %s", output_dir / "report.md")
    return results
