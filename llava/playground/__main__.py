"""`python -m llava.playground run [--preset smoke|quick|full] [--output-dir DIR]`
`python -m llava.playground sweep [--preset quick] [--runs native:0-4,avx2:0-4,default:0] [--jobs N]`
`python -m llava.playground backbones --output-dir DIR [--preset default|smoke] [--seed N]`

The paper's comparison in miniature (docs/playground.md): Inverse-LLaVA vs LLaVA-1.5 vs LLaVA-1.5
without alignment on synthetic data and tiny backbones, through the real entry points.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
from pathlib import Path

import torch

from llava.playground import backbones, sweep
from llava.playground.presets import PIPELINES, PRESETS, get_preset
from llava.playground.run import run


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m llava.playground",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", parents=[common], help="run (or resume) the comparison")
    run_parser.add_argument("--preset", default="quick", choices=sorted(PRESETS))
    run_parser.add_argument("--output-dir", default=None, help="default: playground/runs/<preset>")
    run_parser.add_argument(
        "--pipelines", default=None, help=f"comma-separated subset of {sorted(PIPELINES)}"
    )
    run_parser.add_argument("--seeds", default=None, help="comma-separated seeds (default: the preset's)")
    run_parser.add_argument("--backbones-dir", default=None, help="default: the shipped playground/backbones")
    sweeps = commands.add_parser(
        "sweep", parents=[common], help="the preset over seeds x CPU kernels, one report over all runs"
    )
    sweeps.add_argument("--preset", default="quick", choices=sorted(PRESETS))
    sweeps.add_argument("--runs", default=sweep.DEFAULT_RUNS, help="KERNELS:SEEDS,... (default: %(default)s)")
    sweeps.add_argument("--output-dir", default=None, help="default: playground/runs/<preset>-sweep")
    sweeps.add_argument("--jobs", type=int, default=1, help="runs at a time (default: %(default)s)")
    sweeps.add_argument("--backbones-dir", default=None, help="default: the shipped playground/backbones")
    stage0 = commands.add_parser("backbones", parents=[common], help="pre-train the tiny CLIP and chat LM")
    stage0.add_argument("--output-dir", required=True, help="where to write vision/, llm/ and metrics.json")
    stage0.add_argument("--preset", default="default", choices=sorted(backbones.PRESETS))
    stage0.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.command == "backbones":
        return backbones.build_backbones(args.output_dir, seed=args.seed, preset=args.preset)
    if args.command == "sweep":
        try:
            runs = sweep.parse_runs(args.runs)
        except ValueError as err:
            parser.error(str(err))
        output = Path(args.output_dir or Path("playground") / "runs" / f"{args.preset}-sweep")
        threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
        return sweep.sweep(args.preset, runs, output, args.jobs, threads, args.backbones_dir)
    overrides = {}
    if args.pipelines:
        overrides["pipelines"] = tuple(p for p in args.pipelines.split(",") if p)
    if args.seeds:
        overrides["seeds"] = tuple(int(s) for s in args.seeds.split(","))
    try:
        preset = dataclasses.replace(get_preset(args.preset), **overrides)
    except ValueError as err:  # an unknown pipeline, named
        parser.error(str(err))
    output_dir = Path(args.output_dir or Path("playground") / "runs" / preset.name)
    return run(preset, output_dir, backbones_dir=args.backbones_dir or backbones.SHIPPED_BACKBONES)


if __name__ == "__main__":
    main()
