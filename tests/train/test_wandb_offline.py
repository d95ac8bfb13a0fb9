"""`--report_to wandb` offline (`WANDB_MODE=offline`): the run's files hold the training losses."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.train.train_helpers import FUSION_FLAGS, run_training

# The `.wandb` file is a LevelDB-style log of protobuf records (a 7-byte file header, then 32 KiB
# blocks of chunks with a 7-byte header each), as wandb's former `sdk/internal/datastore.py` read it.
_BLOCK, _HEADER = 32768, 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def wandb_records(path: Path) -> Iterator[bytes]:
    """The serialised records of a `.wandb` file."""
    data = path.read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:_HEADER])
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0), f"{path}: not a wandb log"
    offset, pending = _HEADER, b""
    while offset + _HEADER <= len(data):
        room = _BLOCK - offset % _BLOCK
        if room < _HEADER:  # the block's tail is padding
            offset += room
            continue
        _, length, kind = struct.unpack("<IHB", data[offset : offset + _HEADER])
        chunk = data[offset + _HEADER : offset + _HEADER + length]
        offset += _HEADER + length
        if kind == _FULL:
            yield chunk
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            yield pending + chunk
        elif kind == 0 and length == 0:  # zero padding at the end of the file
            return


def logged_losses(run_dir: Path) -> list[float]:
    from wandb.proto import wandb_internal_pb2

    (log,) = run_dir.glob("run-*.wandb")
    losses = []
    for raw in wandb_records(log):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") != "history":
            continue
        items = {
            "/".join(item.nested_key) or item.key: json.loads(item.value_json) for item in record.history.item
        }
        if "train/loss" in items:
            losses.append(items["train/loss"])
    return losses


def test_report_to_wandb_offline_writes_the_losses(run_flags, tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_PROJECT", "inverse-llava-test")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    argv = run_flags(out, *FUSION_FLAGS, "--max_steps", "3", "--save_strategy", "no", "--run_name", "tiny")
    summary, _ = run_training([*argv, "--report_to", "wandb"])
    # What the end of a training script does: finish the run and stop wandb's service process,
    # which writes the run's log before it exits (`finish` alone returns before that).
    wandb.finish()
    wandb.teardown()
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    # wandb stores each value as JSON, whose shortest round-trip form reads back as the same double
    assert logged_losses(run_dir) == summary["losses"]
    assert len(summary["losses"]) == 3
