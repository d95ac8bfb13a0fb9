"""The registry, chunk merging, and the shell scripts (consistency with the registry, and one
end-to-end run of the chunk-and-merge path with a stand-in runner)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from llava.eval import run_record
from llava.eval.benchmarks import BENCHMARKS, TABLE1_COLUMNS, get_benchmark, main, merge_chunks

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts" / "v1_5" / "eval"
ALL = ("vqav2", "gqa", "vizwiz", "sqa", "textvqa", "pope", "mme", "mmbench", "mmbench_cn", "seed", "llavabench", "mmvet",
       "ocrbench", "ai2d", "mmstar", "vqav2_val")  # fmt: skip


def test_registry_covers_every_benchmark():
    assert set(BENCHMARKS) == set(ALL)
    assert [BENCHMARKS[b].table1_label for b in TABLE1_COLUMNS] == [
        "MM-Vet", "VizWiz", "SQA-I", "MMB", "MMB-CN", "MME-P", "VQAv2", "TextVQA", "GQA",
    ]  # fmt: skip
    assert {b.name for b in BENCHMARKS.values() if b.chunked} == {"vqav2", "gqa", "seed", "vqav2_val"}
    # The benchmarks LLaVA-1.5 did not report have no reference number, and a question-file builder.
    added = [get_benchmark(name) for name in ("ocrbench", "ai2d", "mmstar", "vqav2_val")]
    assert all(b.llava15_7b is None and b.builder is not None and b.scoring == "local" for b in added)
    assert get_benchmark("sqa").max_new_tokens == 1024 and get_benchmark("gqa").max_new_tokens == 128
    assert get_benchmark("mmbench_cn").lang == "cn" and get_benchmark("sqa").single_pred_prompt
    assert (get_benchmark("mme").llava15_7b, get_benchmark("mme").llava15_13b) == (1510.7, 1531.3)
    with pytest.raises(KeyError, match="unknown benchmark 'nope'"):
        get_benchmark("nope")


def _expanded(script: str) -> str:
    """The script text with its path variables substituted (GQADIR is built from DATA)."""
    values = dict(re.findall(r"^(SPLIT|DATA|GQADIR)=(\S+)$", script, flags=re.M))
    for var in ("GQADIR", "DATA", "SPLIT"):
        if var in values:
            script = script.replace(f"${var}", values[var])
    return script


@pytest.mark.parametrize("name", ALL)
def test_script_matches_registry(name):
    bench, script = BENCHMARKS[name], (SCRIPTS / f"{name}.sh").read_text()
    assert "_common.sh" in script and "parse_model_args" in script
    expanded = _expanded(script)
    if name.startswith("mmbench"):  # the question file is built inside run_mmbench
        folder, _, tsv = bench.question_file.partition("/")
        assert f"DATA=$EVAL_DIR/{folder}" in script and f"SPLIT={Path(tsv).stem}" in script
        assert "run_mmbench" in script
    else:
        assert f"$EVAL_DIR/{bench.question_file}" in expanded
        assert f"$EVAL_DIR/{bench.image_folder}" in expanded
        assert bench.runner in script
    assert ("run_chunked" in script) == bench.chunked


def test_merge_chunks_in_index_order(tmp_path):
    (tmp_path / "2_1.jsonl").write_text('{"question_id": 3}\n')
    (tmp_path / "2_0.jsonl").write_text('{"question_id": 1}\n{"question_id": 2}')  # no final newline
    merged = merge_chunks(tmp_path, 2)
    assert [json.loads(x)["question_id"] for x in merged.read_text().splitlines()] == [1, 2, 3]
    with pytest.raises(FileNotFoundError, match="3_2.jsonl"):
        merge_chunks(tmp_path, 3)


def test_list_prints_every_benchmark(capsys):
    main(["list"])
    out = capsys.readouterr().out
    assert all(f"\n{name} " in out for name in ALL[1:]) and out.startswith("name ")


# Stands in for `python`: fakes the answer runner (ceil(N/K) contiguous chunk, answer "yes"),
# checks its flags, and passes every other command to the real interpreter.
FAKE_PYTHON = """#!{python}
import json, math, os, sys
args = sys.argv[1:]
if args[:2] != ["-m", "llava.eval.model_vqa_loader"]:
    os.execv({python!r}, [{python!r}, *args])
opt = dict(zip(args[2::2], args[3::2]))
assert opt["--temperature"] == "0" and opt["--conv-mode"] == "vicuna_v1", opt
assert opt["--model-path"] == "/ckpts/my-ckpt/" and opt["--model-base"] == "/base", opt
qs = [json.loads(x) for x in open(opt["--question-file"])]
k, i = int(opt["--num-chunks"]), int(opt["--chunk-idx"])
size = math.ceil(len(qs) / k)
with open(opt["--answers-file"], "w") as f:
    for q in qs[i * size:(i + 1) * size]:
        f.write(json.dumps({{"question_id": q["question_id"], "prompt": q["text"], "text": "Yes."}}) + "\\n")
"""


@pytest.mark.skipif(sys.platform == "win32", reason="bash scripts")
def test_gqa_script_chunks_merges_and_scores(tmp_path):
    eval_dir = tmp_path / "eval"
    gqa = eval_dir / "gqa"
    (gqa / "data").mkdir(parents=True)
    questions = [
        {"question_id": f"q{i}", "image": f"{i}.jpg", "text": "Is it?", "category": "x"} for i in range(5)
    ]
    (gqa / "llava_gqa_testdev_balanced.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    answers = {f"q{i}": {"answer": "yes" if i < 3 else "no", "isBalanced": True} for i in range(5)}
    (gqa / "data" / "testdev_balanced_questions.json").write_text(json.dumps(answers))
    fake = tmp_path / "fake_python"
    fake.write_text(FAKE_PYTHON.format(python=sys.executable))
    fake.chmod(0o755)
    env = {**os.environ, "EVAL_DIR": str(eval_dir), "PYTHON": str(fake), "CUDA_VISIBLE_DEVICES": "0,1"}
    proc = subprocess.run(
        ["bash", str(SCRIPTS / "gqa.sh"), "/ckpts/my-ckpt/", "/base"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    answers_dir = gqa / "answers" / "llava_gqa_testdev_balanced" / "my-ckpt"
    assert sorted(p.name for p in answers_dir.iterdir()) == ["2_0.jsonl", "2_1.jsonl", "merge.jsonl"]
    merged = [json.loads(x)["question_id"] for x in (answers_dir / "merge.jsonl").read_text().splitlines()]
    assert merged == ["q0", "q1", "q2", "q3", "q4"]  # chunk 0 (3 questions), then chunk 1 (2)
    assert "Accuracy: 60.00%" in proc.stdout  # "yes" right on q0-q2
    result = json.loads((eval_dir / "results" / "my-ckpt" / "gqa.json").read_text())
    assert result["score"] == 60.0


def test_gqa_script_does_not_merge_after_a_failed_chunk(tmp_path):
    gqa = tmp_path / "eval" / "gqa"
    gqa.mkdir(parents=True)
    (gqa / "llava_gqa_testdev_balanced.jsonl").write_text('{"question_id": "q0", "text": "?"}\n')
    fake = tmp_path / "fake_python"
    fake.write_text(FAKE_PYTHON.format(python=sys.executable))
    fake.chmod(0o755)
    env = {**os.environ, "EVAL_DIR": str(tmp_path / "eval"), "PYTHON": str(fake), "CUDA_VISIBLE_DEVICES": "0"}
    # no model base: the stand-in runner's flag check fails
    proc = subprocess.run(
        ["bash", str(SCRIPTS / "gqa.sh"), "/ckpts/my-ckpt/"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1 and "not merging" in proc.stderr
    assert not (gqa / "answers" / "llava_gqa_testdev_balanced" / "my-ckpt" / "merge.jsonl").exists()


# Stands in for `python`: logs every command line and does nothing else.
LOGGING_PYTHON = """#!/usr/bin/env bash
printf '%s\\n' "$*" >> {log}
"""


@pytest.mark.skipif(sys.platform == "win32", reason="bash scripts")
@pytest.mark.parametrize("script", ["mme.sh", "gqa.sh", "mmbench.sh"])
@pytest.mark.parametrize("base", [["/base"], []])
def test_scripts_pass_extra_flags_to_the_runner(script, base, tmp_path):
    log = tmp_path / "commands.txt"
    fake = tmp_path / "fake_python"
    fake.write_text(LOGGING_PYTHON.format(log=log))
    fake.chmod(0o755)
    env = {**os.environ, "EVAL_DIR": str(tmp_path / "eval"), "PYTHON": str(fake), "CUDA_VISIBLE_DEVICES": "0"}
    proc = subprocess.run(["bash", str(SCRIPTS / script), "/ckpts/my-ckpt", *base, "--batch-size", "8"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    runner, *others = log.read_text().splitlines()
    assert runner.startswith("-m llava.eval.model_vqa") and runner.endswith(" --batch-size 8"), runner
    assert ("--model-base /base" in runner) == bool(base)
    assert not [line for line in others if "--batch-size" in line]  # the runner's flag only


def test_script_without_checkpoint_prints_usage():
    proc = subprocess.run(
        ["bash", str(SCRIPTS / "pope.sh")], cwd=REPO, capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 2 and "usage:" in proc.stderr


def _chunk_record(i: int, k: int, temperature: float = 0.0) -> dict:
    return {"format": run_record.FORMAT, "runner": run_record.LOADER_RUNNER, "decoding": {"temperature": temperature},
            "question_file": {"path": "/q.jsonl", "sha256": "ab"}, "chunk": {"num_chunks": k, "chunk_idx": i}}  # fmt: skip


def test_merge_chunks_merges_their_run_records(tmp_path):
    for i in range(2):
        (tmp_path / f"2_{i}.jsonl").write_text(f'{{"question_id": {i}}}\n')
        run_record.write_record(tmp_path / f"2_{i}.jsonl", _chunk_record(i, 2))
    merged = merge_chunks(tmp_path, 2)
    record = run_record.read_record(merged)
    assert record["chunk"] == {"num_chunks": 2, "merged_from": ["2_0.jsonl", "2_1.jsonl"]}
    assert record["question_file"] == {"path": "/q.jsonl", "sha256": "ab"}
    # chunks of different runs are not merged
    run_record.write_record(tmp_path / "2_1.jsonl", _chunk_record(1, 2, temperature=0.7))
    with pytest.raises(
        ValueError, match=r"decoding.temperature is 0.0 in .*2_0.jsonl.meta.json but 0.7 in .*2_1"
    ):
        merge_chunks(tmp_path, 2)
    run_record.write_record(tmp_path / "2_1.jsonl", _chunk_record(0, 2))  # chunk 0 written twice
    with pytest.raises(ValueError, match=r"2_1.jsonl.meta.json: chunk 0 of 2, expected chunk 1 of 2"):
        merge_chunks(tmp_path, 2)
    run_record.record_path(tmp_path / "2_1.jsonl").unlink()
    with pytest.raises(ValueError, match=r"answer chunks without a run record .*2_1.jsonl"):
        merge_chunks(tmp_path, 2)


# Stands in for `python` in llavabench.sh: fakes the free-form runner and logs any judge call.
FAKE_JUDGE_PYTHON = """#!{python}
import json, os, sys
args = sys.argv[1:]
if args[:2] == ["-m", "llava.eval.model_vqa"]:
    opt = dict(zip(args[2::2], args[3::2]))
    open(opt["--answers-file"], "w").write(json.dumps({{"question_id": 0, "text": "A bus."}}) + "\\n")
elif args[:2] == ["-m", "llava.eval.judge"]:
    open({log!r}, "a").write(" ".join(args) + "\\n")
else:
    os.execv({python!r}, [{python!r}, *args])
"""


@pytest.mark.skipif(sys.platform == "win32", reason="bash scripts")
def test_llavabench_script_sends_nothing_without_an_endpoint(tmp_path):
    (tmp_path / "eval" / "llava-bench-in-the-wild").mkdir(parents=True)
    log = tmp_path / "judge_calls.txt"
    fake = tmp_path / "fake_python"
    fake.write_text(FAKE_JUDGE_PYTHON.format(python=sys.executable, log=str(log)))
    fake.chmod(0o755)
    env = {**os.environ, "EVAL_DIR": str(tmp_path / "eval"), "PYTHON": str(fake), "OPENAI_API_KEY": "sk-x"}
    env.pop("JUDGE_BASE_URL", None)
    proc = subprocess.run(["bash", str(SCRIPTS / "llavabench.sh"), "/ckpts/my-ckpt"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0 and "JUDGE_BASE_URL is not set" in proc.stderr
    assert not log.exists()  # a key in the environment alone sends nothing anywhere
    env["JUDGE_BASE_URL"] = "http://127.0.0.1:9/v1"
    proc = subprocess.run(["bash", str(SCRIPTS / "llavabench.sh"), "/ckpts/my-ckpt"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    review, summarize = log.read_text().splitlines()
    assert "--base-url http://127.0.0.1:9/v1" in review and "--api-key-env" not in review
    assert summarize.startswith("-m llava.eval.judge summarize")
