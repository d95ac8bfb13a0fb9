"""Training as two nodes on one machine (ZeRO-2 through DeepSpeed's launcher, ZeRO-3 through
torchrun; `tests/train/multinode.py` says how the nodes are simulated): the same weights as one
node of two processes, every file of the run written by one node only, and a node killed mid-run
followed by a restart of both that ends where an uninterrupted run ends."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from llava.train.resume import DEEPSPEED_TAG_FILE, SUMMARY_FILE, checkpoint_problem
from tests.train.multinode import STRACE, TRAIN_MODULE, TwoNodes, file_writers, run_one_node, strace_usable
from tests.train.train_helpers import FUSION_FLAGS, REPO, max_abs_diff, trained_state

# The launcher each stage's nodes run under: both launchers, and both stages, are covered.
LAUNCHER = {"zero2": "deepspeed", "zero3": "torchrun"}
MAX_STEPS, SAVE_STEPS = 4, 2
TRACING = strace_usable()
# A per-rank file of a checkpoint (DeepSpeed's ZeRO partitions, the Trainer's RNG states) and its rank.
_RANK_FILE = re.compile(r"^(?:zero_pp_rank_(\d+)_mp_rank_\d+_\w+\.pt|rng_state_(\d+)\.pth)$")


def _rank_of(name: str) -> int:
    """The rank whose process writes a file of this name: its own per-rank file, else rank 0 (the
    world's main process, which alone writes everything shared)."""
    match = _RANK_FILE.match(name)
    return int(match[1] or match[2]) if match else 0


def _zero_files(stage: str) -> set[str]:
    """The files of a DeepSpeed checkpoint tag of 2 ranks: one optimizer partition per rank, and
    under ZeRO-3 one parameter partition per rank; ZeRO-2 keeps the whole module once (rank 0)."""
    optimizer = {f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt" for rank in (0, 1)}
    if stage == "zero3":
        return optimizer | {f"zero_pp_rank_{rank}_mp_rank_00_model_states.pt" for rank in (0, 1)}
    return optimizer | {"mp_rank_00_model_states.pt"}


def _files(folder: Path) -> set[str]:
    return {path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file()}


def _summary(run: Path) -> dict:
    return json.loads((run / SUMMARY_FILE).read_text())


@pytest.fixture(scope="module", params=sorted(LAUNCHER))
def stage(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def flags(stage, run_flags, tmp_path_factory):
    """`flags(output_dir)`: the run's flags (micro-batch 1 per process), under `stage`."""
    accelerator = tmp_path_factory.mktemp("accelerator") / "accelerator.json"
    accelerator.write_text(json.dumps({"use_configured_state": True}))

    def _flags(output_dir: Path) -> list[str]:
        steps = ["--max_steps", str(MAX_STEPS), "--save_steps", str(SAVE_STEPS)]
        deepspeed = ["--deepspeed", str(REPO / "scripts" / f"{stage}.json")]
        extra = [*FUSION_FLAGS, *steps, *deepspeed, "--accelerator_config", str(accelerator)]
        return run_flags(output_dir, *extra, per_device_train_batch_size="1")

    return _flags


@pytest.fixture(scope="module")
def one_node(flags, tmp_path_factory) -> Path:
    """The run as one node of two processes."""
    work = tmp_path_factory.mktemp("one-node")
    run_one_node([TRAIN_MODULE, *flags(work / "run")], work)
    return work / "run"


@pytest.fixture(scope="module")
def two_nodes(stage, flags, tmp_path_factory) -> tuple[Path, list[Path]]:
    """The run as two nodes of one process each (its output folder), and each node's strace
    record where strace can trace."""
    work = tmp_path_factory.mktemp("two-nodes")
    with TwoNodes(LAUNCHER[stage], work, "two-nodes", trace=TRACING) as nodes:
        nodes.run([TRAIN_MODULE, *flags(work / "run")])
    return work / "run", nodes.traces


@pytest.mark.slow
def test_two_nodes_train_what_one_node_of_two_processes_trains(stage, one_node, two_nodes):
    run, _ = two_nodes
    summary, reference = _summary(run), _summary(one_node)
    assert summary["world_size"] == 2 and summary["deepspeed_enabled"]
    assert summary["zero_stage"] == int(stage[-1]) and summary["global_step"] == MAX_STEPS
    if stage == "zero3":
        assert summary["partitioned_parameters"] > 0  # really partitioned: local numel 0
    # Same ranks, same data (the sampler depends on the rank and the world size, not the node),
    # same local arithmetic; what crosses processes is copied (gathers) or, in a reduction of two
    # ranks, one addition per element, which gives the same bits in either order: the same weights.
    assert max_abs_diff(trained_state(run), trained_state(one_node)) == 0.0
    assert summary["losses"] == reference["losses"]

    checkpoints = [f"checkpoint-{step}" for step in range(SAVE_STEPS, MAX_STEPS + 1, SAVE_STEPS)]
    assert sorted(p.name for p in run.glob("checkpoint-*")) == checkpoints
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")]  # no temporary folder left
    for name in checkpoints:
        folder = run / name
        assert checkpoint_problem(folder) is None  # every file its manifest lists, at its size
        assert _files(folder) == _files(one_node / name)  # the same files, none per node
        tag = (folder / DEEPSPEED_TAG_FILE).read_text().strip()
        assert _files(folder / tag) == _zero_files(stage)  # one partition per rank
        assert {p.name for p in folder.glob("rng_state_*.pth")} == {"rng_state_0.pth", "rng_state_1.pth"}


@pytest.mark.slow
@pytest.mark.skipif(not TRACING, reason="needs strace, allowed to trace child processes")
def test_each_file_is_written_by_one_node(two_nodes):
    """Both nodes share this disk, as nodes share a cluster's filesystem: node 1 writes only its
    rank's partitions and RNG state; the model, the shared state and the publishing are node 0's."""
    run, traces = two_nodes
    writers = file_writers(traces, run)
    on_disk = {path.as_posix() for path in run.rglob("*") if path.is_file()}
    assert set(writers) == on_disk  # the traces account for every file of the run
    wrong = {path: nodes for path, nodes in writers.items() if nodes != {_rank_of(Path(path).name)}}
    assert not wrong, wrong
    by_node_1 = {Path(path).name for path, nodes in writers.items() if nodes == {1}}
    assert by_node_1 >= {"rng_state_1.pth", "zero_pp_rank_1_mp_rank_00_optim_states.pt"}


@pytest.mark.slow
def test_a_killed_node_then_both_restarted_end_where_the_uninterrupted_run_ends(
    stage, flags, two_nodes, tmp_path
):
    """Node 1 dies (SIGKILL of its launcher and its process) while paused right after checkpoint
    `SAVE_STEPS` is published; node 0, blocked in its next collective, fails instead of hanging.
    Both nodes restarted with `--resume_from_checkpoint latest` then train to the uninterrupted
    run's weights, bit for bit (same processes, same operations on the restored values)."""
    run, paused = tmp_path / "run", tmp_path / "node1-paused"
    argv = flags(run)
    with TwoNodes(LAUNCHER[stage], tmp_path, "killed") as nodes:
        nodes.start_node(0, [TRAIN_MODULE, *argv])
        nodes.start_node(1, ["tests.train.pause_after_save", str(SAVE_STEPS), str(paused), *argv])
        early = nodes.wait_node(1, 600, until=paused.exists)
        assert early is None and paused.exists(), (
            f"node 1 exited ({early}) before pausing\n{nodes.log_tails()}"
        )
        nodes.kill_node(1)
        assert nodes.wait_node(1, 60) == -signal.SIGKILL
        survivor = nodes.wait_node(0, 120)
        assert survivor not in (None, 0), f"node 0: exit code {survivor}\n{nodes.log_tails()}"
    assert [p.name for p in run.glob("checkpoint-*")] == [f"checkpoint-{SAVE_STEPS}"]
    assert checkpoint_problem(run / f"checkpoint-{SAVE_STEPS}") is None
    assert not (run / SUMMARY_FILE).exists()

    with TwoNodes(LAUNCHER[stage], tmp_path, "resumed") as nodes:
        nodes.run([TRAIN_MODULE, *argv, "--resume_from_checkpoint", "latest"])
    assert f"resuming from {run / f'checkpoint-{SAVE_STEPS}'}" in (tmp_path / "resumed.node0.log").read_text()
    uninterrupted, _ = two_nodes
    summary = _summary(run)
    assert summary["global_step"] == MAX_STEPS and summary["losses"] == _summary(uninterrupted)["losses"]
    assert max_abs_diff(trained_state(run), trained_state(uninterrupted)) == 0.0


@pytest.mark.skipif(not TRACING, reason="needs strace, allowed to trace child processes")
def test_file_writers_names_every_writer_of_a_file_under_its_final_name(tmp_path):
    """The replay of two nodes' traces, on real traced processes run one after the other: a file
    both write counts for both; files written into a temporary folder, or under a temporary name,
    count under the name the last rename gives them, whoever renames; a failed rename moves
    nothing."""
    run = tmp_path / "run"
    temp, final = run / ".tmp-checkpoint-1", run / "checkpoint-1"
    steps = [
        (0, f"import os; os.makedirs({str(temp)!r}); open({str(temp / 'shared.json')!r}, 'w').write('0')"),
        (1, f"open({str(temp / 'part_1.pt')!r}, 'w').write('1'); open({str(temp / 'shared.json')!r}, 'w')"),
        (1, f"import contextlib, os\nwith contextlib.suppress(OSError): "
            f"os.rename({str(temp / 'part_1.pt')!r}, {str(run / 'no' / 'part_1.pt')!r})"),
        (0, f"import os; open({str(run / '.tmpab12')!r}, 'w').write('0')\n"
            f"os.replace({str(run / '.tmpab12')!r}, {str(run / 'model.safetensors')!r})\n"
            f"os.rename({str(temp)!r}, {str(final)!r})"),
    ]  # fmt: skip
    traces = [tmp_path / "node0.strace", tmp_path / "node1.strace"]
    for node_rank, code in steps:  # -A: each node's record appended to
        subprocess.run(
            [*STRACE, "-ttt", "-A", "-o", str(traces[node_rank]), sys.executable, "-c", code], check=True
        )
    assert file_writers(traces, run) == {
        str(final / "shared.json"): {0, 1},
        str(final / "part_1.pt"): {1},
        str(run / "model.safetensors"): {0},
    }
