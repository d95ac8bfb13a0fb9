"""`python -m llava.playground run [--preset smoke|quick|full] [--output-dir DIR]`

The paper's comparison in miniature (see docs/playground.md): synthetic data, the shipped tiny
backbones, Inverse-LLaVA vs LLaVA-1.5 vs alignment-free LLaVA through the real training and
evaluation entry points, and a report. Finished stages are skipped on a re-run.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

import torch

from llava.playground.presets import PIPELINES, PRESETS, get_preset
from llava.playground.run import run


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m llava.playground",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="run (or resume) the comparison")
    run_parser.add_argument("--preset", default="quick", choices=sorted(PRESETS))
    run_parser.add_argument("--output-dir", default=None, help="default: playground/runs/<preset>")
    run_parser.add_argument(
        "--pipelines", default=None, help=f"comma-separated subset of {sorted(PIPELINES)}"
    )
    run_parser.add_argument("--seeds", default=None, help="comma-separated seeds (default: the preset's)")
    run_parser.add_argument("--backbones-dir", default=None, help="default: the shipped playground/backbones")
    run_parser.add_argument("--rebuild-backbones", action="store_true", help="pre-train the backbones first")
    run_parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
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
    return run(preset, output_dir, backbones_dir=args.backbones_dir, rebuild_backbones=args.rebuild_backbones)


if __name__ == "__main__":
    main()
