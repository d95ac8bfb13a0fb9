"""The OCRBench, AI2D, MMStar and VQAv2-val scripts end to end with a stand-in answer runner: the
question file made from the release files on the first run, the runner's flags, chunking and
merging (VQAv2 val), and the score in the results JSON worked out by hand."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.eval.benchmark_files import write_ai2d, write_mmstar, write_ocrbench, write_vqav2

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts" / "v1_5" / "eval"

# Stands in for `python`: fakes the loader runner (its chunk of the questions, each answered with
# $FAKE_ANSWER), logs the runner's flags, and passes every other command to the real interpreter.
FAKE_PYTHON = """#!{python}
import json, math, os, sys
args = sys.argv[1:]
if args[:2] != ["-m", "llava.eval.model_vqa_loader"]:
    os.execv({python!r}, [{python!r}, *args])
opt = dict(zip(args[2::2], args[3::2]))
with open({log!r}, "a") as log:
    log.write(" ".join(args) + "\\n")
qs = [json.loads(x) for x in open(opt["--question-file"])]
k, i = int(opt.get("--num-chunks", 1)), int(opt.get("--chunk-idx", 0))
size = math.ceil(len(qs) / k)
with open(opt["--answers-file"], "w") as f:
    for q in qs[i * size:(i + 1) * size]:
        assert os.path.isfile(os.path.join(opt["--image-folder"], q["image"])), q["image"]
        f.write(json.dumps({{"question_id": q["question_id"], "prompt": q["text"], "text": os.environ["FAKE_ANSWER"]}}) + "\\n")
"""

# bench -> (data folder, writer of its release files, the constant answer, expected score).
CASES = {
    # "CENTRE JOINT" holds "centre" and "joint" (records 0 and 2): 2 points
    "ocrbench": ("ocrbench", lambda d: write_ocrbench(d, images=True), "CENTRE JOINT", 2),
    # "B" is right for the first of the answers B, C, A
    "ai2d": ("ai2d", write_ai2d, "B", 100 / 3),
    # "A" is right for two of the answers A, B, C, A
    "mmstar": ("mmstar", write_mmstar, "A", 50.0),
    # "yes" is right (1.0) for the first of five questions only
    "vqav2_val": ("vqav2", lambda d: write_vqav2(d, images=True), "yes", 20.0),
}
QUESTION_FILES = {
    "ocrbench": "llava_ocrbench.jsonl",
    "ai2d": "llava_ai2d_test.jsonl",
    "mmstar": "llava_mmstar.jsonl",
    "vqav2_val": "llava_vqav2_mscoco_val2014.jsonl",
}


@pytest.mark.slow  # three to four Python processes a script, each importing torch
@pytest.mark.skipif(sys.platform == "win32", reason="bash scripts")
@pytest.mark.parametrize("bench", list(CASES))
def test_script_builds_the_question_file_answers_and_scores(bench, tmp_path):
    folder, write, answer, expected = CASES[bench]
    data = tmp_path / "eval" / folder
    write(data)
    log = tmp_path / "runner.txt"
    fake = tmp_path / "fake_python"
    fake.write_text(FAKE_PYTHON.format(python=sys.executable, log=str(log)))
    fake.chmod(0o755)
    env = {**os.environ, "EVAL_DIR": str(tmp_path / "eval"), "PYTHON": str(fake), "CUDA_VISIBLE_DEVICES": "0,1",
           "FAKE_ANSWER": answer}  # fmt: skip
    proc = subprocess.run(["bash", str(SCRIPTS / f"{bench}.sh"), "/ckpts/my-ckpt", "/base", "--batch-size", "4"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (data / QUESTION_FILES[bench]).is_file()
    runs = log.read_text().splitlines()
    assert len(runs) == (2 if bench == "vqav2_val" else 1)  # one process per "GPU" when chunked
    assert all("--model-base /base" in run and run.endswith("--batch-size 4") for run in runs)
    result = json.loads((tmp_path / "eval" / "results" / "my-ckpt" / f"{bench}.json").read_text())
    assert result["benchmark"] == bench and result["score"] == pytest.approx(expected)
    assert result["partial"] is None


@pytest.mark.skipif(sys.platform == "win32", reason="bash scripts")
def test_missing_release_file_stops_the_script(tmp_path):
    (tmp_path / "eval" / "mmstar").mkdir(parents=True)
    env = {**os.environ, "EVAL_DIR": str(tmp_path / "eval"), "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(SCRIPTS / "mmstar.sh"), "/ckpts/my-ckpt"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode != 0 and "mmstar.parquet: no such parquet file" in proc.stderr
    assert not (tmp_path / "eval" / "mmstar" / "llava_mmstar.jsonl").exists()
