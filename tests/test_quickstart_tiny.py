"""docs/quickstart_tiny.md's `bash` blocks, run verbatim in a temporary folder (one bash process,
`-euo pipefail`): the tiny recipe (checkpoints, train, resume, merge, export, serve, evaluate,
report) stays in step with the code. The server it starts listens on 127.0.0.1 at a free port
(`PORT`) and is stopped by the recipe; whatever is left of the recipe's processes is killed."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "quickstart_tiny.md"
_BASH_BLOCK = re.compile(r"^```bash\n(.*?)^```", re.DOTALL | re.MULTILINE)


def bash_blocks(text: str) -> list[str]:
    return _BASH_BLOCK.findall(text)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_the_doc_has_every_step():
    script = "\n".join(bash_blocks(DOC.read_text()))
    for command in (
        "llava.tools.make_tiny_checkpoints",
        "llava.train.train",
        "--resume_from_checkpoint latest",
        "llava.train.merge",
        "llava.tools.export_llava_hf",
        "llava.serve.api",
        "llava.eval.model_vqa_loader",
        "llava.eval.eval_textvqa",
        "llava.eval.report",
        "llava.eval.run_llava",
    ):
        assert command in script
    for doc in ("training.md", "inference.md"):
        assert "(quickstart_tiny.md)" in (REPO / "docs" / doc).read_text()


def test_the_tiny_quickstart_runs_as_written(tmp_path):
    script = "\n".join(bash_blocks(DOC.read_text()))
    env = {**os.environ, "PORT": str(free_port()), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("LLAVA_API_KEY", None)  # the server's default key; the recipe's requests send none
    proc = subprocess.Popen(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: the server included
    )
    try:
        output, _ = proc.communicate(timeout=900)
        server = int((tmp_path / "work" / "server.pid").read_text())
        deadline = time.monotonic() + 60
        while _alive(server) and time.monotonic() < deadline:
            time.sleep(0.5)
        stopped = not _alive(server)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, output[-6000:]
    assert stopped, "the recipe left its server running"

    work = tmp_path / "work"
    assert "resuming from work/runs/inverse-llava/checkpoint-4" in output
    assert (
        json.loads((work / "runs" / "inverse-llava" / "training_summary.json").read_text())["global_step"]
        == 8
    )
    assert (work / "models" / "inverse-llava" / "model.safetensors").is_file()
    assert json.loads((work / "models" / "llava-1.5-hf" / "config.json").read_text())["model_type"] == "llava"
    assert '"object":"chat.completion"' in output
    score = json.loads((work / "results" / "inverse-llava" / "textvqa.json").read_text())["score"]
    report = (work / "report" / "report.md").read_text().splitlines()
    assert any(row.startswith("| inverse-llava |") and f"| {score:.2f} |" in row for row in report), report
    assert "holds only trained parts" in output and "exit code 2" in output
    assert "Traceback" not in output
