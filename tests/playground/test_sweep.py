"""`python -m llava.playground sweep`: run specs, one computation per kernel family and seed, and
the smoke preset swept over this CPU's kernels and the scalar default, each run in its own process
under the kernels it names, merged into one report."""

from __future__ import annotations

import json
import os

import pytest

from llava.playground.__main__ import main
from llava.playground.sweep import NATIVE, parse_runs, plan


def test_run_specs_expand_ranges_and_name_a_bad_part():
    assert parse_runs("native:0-2, AVX2:4") == [("native", 0), ("native", 1), ("native", 2), ("avx2", 4)]
    for bad in ("native", "avx2:x", "avx2:1-y", ":3", ""):
        with pytest.raises(ValueError, match="run spec"):
            parse_runs(bad)


def test_a_forced_family_equal_to_the_native_one_runs_once_as_native():
    runs = parse_runs("native:0-1,avx2:0-1,default:0")
    assert plan(runs, "avx2") == {("avx2", 0): NATIVE, ("avx2", 1): NATIVE, ("default", 0): "default"}
    on_avx512 = plan(runs, "avx512")
    assert on_avx512[("avx512", 0)] == NATIVE and on_avx512[("avx2", 1)] == "avx2" and len(on_avx512) == 5


@pytest.mark.slow
def test_smoke_sweep_runs_each_family_in_its_own_process_and_merges_the_runs(tmp_path):
    out = tmp_path / "sweep"
    merged = main(
        [
            "sweep",
            "--preset",
            "smoke",
            "--runs",
            "native:0,default:0",
            "--jobs",
            "2",
            "--output-dir",
            str(out),
        ]
    )

    kernels = {
        (run["environment"]["cpu_capability"], run["environment"]["aten_cpu_capability"])
        for run in merged["runs"]
    }
    native = merged["sweep"]["native_kernels"].upper()
    assert kernels == {(native, None), ("DEFAULT", "default")} and len(merged["runs"]) == 6
    assert merged["runs"][0]["environment"]["threads"] == max(
        1, os.cpu_count() // 2
    )  # two jobs share the cores
    assert json.loads((out / "results.json").read_text()) == merged
    report = (out / "report.md").read_text()
    assert f"seed 0 ({native})" in report and "DEFAULT kernels (ATEN_CPU_CAPABILITY=default), " in report
    assert "### Each cell over the runs (2 runs per model)" in report and "## Claims\n\n- **" in report
    for folder in (f"{native.lower()}-seed0", "default-seed0"):
        assert (out / folder / "report.md").is_file() and (out / f"{folder}.log").is_file()
