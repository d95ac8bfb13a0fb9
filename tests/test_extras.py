"""Without one of pyproject.toml's optional extras, a command says in one line which extra to
install (exit code 2, no traceback) and writes nothing. A package is made missing in a subprocess
by `sys.modules[name] = None`, with which Python refuses its import (ModuleNotFoundError) and
`importlib.util.find_spec` finds nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TRAINING_FLAGS = ["--model_name_or_path", "llm", "--vision_tower", "clip", "--data_path", "d.json"]


def run_without(packages: tuple[str, ...], module: str, *args: str) -> subprocess.CompletedProcess:
    """`python -m <module> <args>` in a process where none of `packages` can be imported."""
    code = (
        f"import runpy, sys; sys.modules.update(dict.fromkeys({packages!r})); "
        f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )


def assert_one_line(proc: subprocess.CompletedProcess, line: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.strip().splitlines()[-1] == line, proc.stderr


def test_the_server_names_the_serve_extra():
    proc = run_without(("uvicorn",), "llava.serve.api", "--help")
    assert_one_line(
        proc, "llava.serve.api needs the serve extra: pip install -e '.[serve]' (missing: uvicorn)"
    )


def test_the_report_names_the_eval_extra_before_writing_anything(tmp_path):
    model = tmp_path / "results" / "m"
    model.mkdir(parents=True)
    mme = {"benchmark": "mme", "score": 150.0, "perception": 150.0, "subtasks": {"existence": 150.0}}
    (model / "mme.json").write_text(json.dumps(mme))
    out = tmp_path / "report"
    proc = run_without(
        ("matplotlib",), "llava.eval.report", "--results-dir", str(tmp_path / "results"), "--out", str(out)
    )
    assert_one_line(
        proc,
        "llava.eval.report (its Figure 3) needs the eval extra: pip install -e '.[eval]' (missing: matplotlib)",
    )
    assert not out.exists()


@pytest.mark.parametrize(
    ("flags", "packages", "line"),
    [
        (
            ["--deepspeed", "scripts/zero2.json"],
            ("deepspeed",),
            "--deepspeed needs the train extra: pip install -e '.[train]' (missing: deepspeed)",
        ),
        (
            ["--report_to", "tensorboard"],
            ("tensorboard", "tensorboardX"),
            "--report_to tensorboard needs the dev extra: pip install -e '.[dev]' (missing: tensorboard)",
        ),
    ],
)
def test_training_flags_name_their_extra(flags, packages, line, tmp_path):
    out = tmp_path / "out"
    proc = run_without(packages, "llava.train.train", *TRAINING_FLAGS, "--output_dir", str(out), *flags)
    assert_one_line(proc, line)
    assert not out.exists()
