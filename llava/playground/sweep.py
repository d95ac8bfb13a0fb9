"""`python -m llava.playground sweep`: one preset over seeds and CPU kernel families, each run a
process of its own (PyTorch reads `ATEN_CPU_CAPABILITY` when it loads), then one report over all
of them, with each cell's minimum and median and the claims checked on every run. The docs'
playground figures come from this command.

A run spec is `KERNELS:SEEDS[,KERNELS:SEEDS...]`: KERNELS is `native` (whatever this CPU runs)
or an `ATEN_CPU_CAPABILITY` value (`avx512`, `avx2`, `default`), SEEDS a seed or a range `0-4`.
A forced family equal to the native one is the same computation: it runs once.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm.auto import tqdm

from llava.playground.presets import get_preset

logger = logging.getLogger(__name__)

NATIVE = "native"
DEFAULT_RUNS = "native:0-4,avx2:0-4,default:0"


def parse_runs(spec: str) -> list[tuple[str, int]]:
    """`"native:0-4,default:0"` -> `[("native", 0), ..., ("native", 4), ("default", 0)]`."""
    runs = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        kernels, sep, seeds = part.partition(":")
        first, _, last = seeds.partition("-")
        if not (sep and kernels and first.isdigit() and (not last or last.isdigit())):
            raise ValueError(f"run spec {part!r}: expected KERNELS:SEED or KERNELS:FIRST-LAST, e.g. avx2:0-4")
        runs += [(kernels.lower(), seed) for seed in range(int(first), int(last or first) + 1)]
    if not runs:
        raise ValueError(f"run spec {spec!r} names no run")
    return runs


def _environment(kernels: str) -> dict[str, str]:
    """This process's environment, with `ATEN_CPU_CAPABILITY` set to `kernels` (left out for native)."""
    env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
    return env if kernels == NATIVE else env | {"ATEN_CPU_CAPABILITY": kernels}


def native_kernels() -> str:
    """The kernel family PyTorch picks on this CPU when nothing forces one (`avx2`, `avx512`, ...)."""
    probe = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    out = subprocess.run(
        [sys.executable, "-c", probe], env=_environment(NATIVE), capture_output=True, text=True
    )
    if out.returncode:
        raise RuntimeError(f"could not ask torch for this CPU's kernels: {out.stderr.strip()}")
    return out.stdout.strip().lower()


def plan(runs: list[tuple[str, int]], native: str) -> dict[tuple[str, int], str]:
    """`(kernel family, seed) -> the ATEN_CPU_CAPABILITY value to run it under` (`native` for none),
    each computation once: a forced family that is the native one runs as native."""
    planned: dict[tuple[str, int], str] = {}
    for kernels, seed in runs:
        family = native if kernels == NATIVE else kernels
        planned.setdefault((family, seed), NATIVE if family == native else kernels)
    return planned


def sweep(
    preset_name: str,
    runs: list[tuple[str, int]],
    output_dir: Path,
    jobs: int,
    threads: int,
    backbones_dir: str | None,
) -> dict:
    """Run every planned (kernels, seed) of `preset_name` into `output_dir/<kernels>-seed<k>/`
    (`jobs` at a time, `threads` torch threads each; finished stages are reused), then write the
    merged `results.json`, `report.md` and `report.png` into `output_dir`."""
    from llava.playground.backbones import SHIPPED_BACKBONES, check_backbones
    from llava.playground.report import write_report

    preset = get_preset(preset_name)
    native = native_kernels()
    planned = plan(runs, native)
    output_dir = output_dir.resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    logger.info("sweep of %s: %d runs, native kernels %s", preset.name, len(planned), native)

    def one(item: tuple[tuple[str, int], str]) -> Path:
        (family, seed), kernels = item
        folder = output_dir / f"{family}-seed{seed}"
        argv = [sys.executable, "-m", "llava.playground", "run", "--preset", preset.name]
        argv += ["--seeds", str(seed), "--output-dir", str(folder), "--threads", str(threads)]
        argv += ["--backbones-dir", str(backbones_dir)] if backbones_dir else []
        log = folder.with_suffix(".log")
        with log.open("w") as stream:
            done = subprocess.run(argv, env=_environment(kernels), stdout=stream, stderr=subprocess.STDOUT)
        if done.returncode:
            raise RuntimeError(f"playground run {folder.name} failed (exit {done.returncode}); see {log}")
        return folder / "results.json"

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        progress = tqdm(pool.map(one, planned.items()), total=len(planned), desc="sweep", unit="run")
        parts = [json.loads(path.read_text()) for path in progress]
    merged = {**parts[0], "runs": [run for part in parts for run in part["runs"]]}
    merged["sweep"] = {"spec": [f"{k}:{s}" for k, s in runs], "native_kernels": native, "runs": len(planned)}
    (output_dir / "results.json").write_text(json.dumps(merged, indent=2))
    llm, vision = check_backbones(backbones_dir or SHIPPED_BACKBONES)
    write_report(merged, output_dir, llm=llm, vision=vision)
    logger.info("sweep report: %s", output_dir / "report.md")
    return merged
