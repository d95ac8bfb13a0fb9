"""The playground's training step with and without `--padding_free True`, through the real entry
point, on the preset's own data, backbones and flags (`llava.playground.run.train_argv`).

    python -m llava.bench.playground_step [--preset quick] [--pipeline inverse_llava]
        [--steps 12] [--warmup 3] [--rounds 2] [--json]

One pipeline's instruction-tuning stage is trained for `warmup + steps` optimizer steps in each
mode, `rounds` times in alternation (padded, padding-free, padded, ...), so that machine noise
hits both alike; the step time is the median over the rounds' measured steps (the time between
the trainer's step callbacks: data loading, forward, backward and optimizer step). The data set is
generated into a temporary folder (`llava.playground.datasets.build_data`, seed 0); the
backbones are the shipped ones (`playground/backbones`). Reported: each mode's median step time,
and the padding-free / padded step-time ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from llava.playground import backbones as playground_backbones
from llava.playground.datasets import build_data
from llava.playground.presets import PIPELINES, get_preset
from llava.playground.run import train_argv
from llava.train.arguments import parse_arguments
from llava.train.train import train

logger = logging.getLogger(__name__)
MODES = ("padded", "padding_free")


class StepTimes(TrainerCallback):
    """Seconds between consecutive optimizer steps' ends (the first from the training's start)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._last = 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        self._last = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        self.seconds.append(now - self._last)
        self._last = now


def run(preset_name: str, pipeline_name: str, steps: int, warmup: int, rounds: int, work_dir: Path) -> dict:
    preset, pipeline = get_preset(preset_name), PIPELINES[pipeline_name]
    llm, vision = playground_backbones.check_backbones()
    data = build_data(work_dir / "data", preset.data, seed=0)
    stage = pipeline.train_stages(preset.budget)[-1]  # instruction tuning
    seconds: dict[str, list[float]] = {mode: [] for mode in MODES}
    for round_index in range(rounds):
        for mode in MODES:
            out = work_dir / f"{mode}-{round_index}"
            argv = train_argv(preset, data, pipeline, stage, (llm, vision), out, 0, None)
            argv += ["--max_steps", str(warmup + steps), "--logging_steps", str(warmup + steps)]
            if mode == "padding_free":
                argv += ["--padding_free", "True"]
            times = StepTimes()
            train(*parse_arguments(argv), callbacks=[times])
            seconds[mode] += times.seconds[warmup:]
    medians = {mode: statistics.median(values) for mode, values in seconds.items()}
    return {
        "preset": preset_name,
        "pipeline": pipeline_name,
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "batch": preset.budget.batch_size,
        "sampler": "group_by_length",
        "steps_per_round": steps,
        "rounds": rounds,
        "step_ms": {mode: 1000 * median for mode, median in medians.items()},
        "padding_free_over_padded": medians["padding_free"] / medians["padded"],
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--pipeline", choices=sorted(PIPELINES), default="inverse_llava")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.rounds < 1 or args.warmup < 0:
        parser.error("--steps and --rounds must be >= 1, --warmup >= 0")
    logging.basicConfig(level=logging.WARNING)
    # stdout carries the figures only: the trainer's own log lines go to stderr
    with (
        tempfile.TemporaryDirectory(prefix="playground-step-") as tmp,
        contextlib.redirect_stdout(sys.stderr),
    ):
        report = run(args.preset, args.pipeline, args.steps, args.warmup, args.rounds, Path(tmp))
    if args.json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        return report
    sys.stdout.write(
        f"{report['preset']} / {report['pipeline']} on cpu ({report['threads']} threads), batch {report['batch']}, "
        f"{report['rounds']} rounds of {report['steps_per_round']} steps: padded {report['step_ms']['padded']:.0f} "
        f"ms/step, padding-free {report['step_ms']['padding_free']:.0f} ms/step, ratio "
        f"{report['padding_free_over_padded']:.3f}\n"
    )
    return report


if __name__ == "__main__":
    main()
