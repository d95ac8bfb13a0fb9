"""`bash scripts/device_check.sh --tiny`: the device check's code at tiny shapes on the CPU prints
one JSON object whose every section ran (no error entry) and holds the figures it promises;
a section that fails becomes an error entry and the others still run."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from llava.bench import device_check

REPO = Path(__file__).resolve().parents[2]
SECTIONS = [
    "conditions",
    "attention",
    "generation",
    "train_step",
    "padding_free",
    "packed_attention",
    "decode",
    "zero3",
]


@pytest.fixture(scope="module")
def report() -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(
        ["bash", "scripts/device_check.sh", "--tiny"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)  # stdout is the JSON object and nothing else


@pytest.mark.slow
def test_tiny_device_check_runs_every_section(report):
    assert list(report)[: len(SECTIONS)] == SECTIONS
    assert report["failed_sections"] == [], {
        name: report[name].get("error") for name in report["failed_sections"]
    }
    conditions = report["conditions"]
    assert conditions["dtype"] == "bfloat16" and conditions["versions"]["torch"] == torch.__version__
    for key, _, _ in device_check.MODELS:  # both fusion layers and the baseline
        assert report["attention"][key]["sdpa"]["within_tolerance"] is True
        assert "skipped" in report["attention"][key]["flash_attention_2"]  # no flash-attn on a CPU
        assert report["generation"][f"{key}/float32"]["identical"] is True
    for model_type in device_check.METHODS:
        assert report["padding_free"][model_type]["max_loss_diff"] <= 1e-5
        assert report["padding_free"][model_type]["attention"]["padding_free"] == "per_sample_attention"
    kernels = report["packed_attention"]["results"]
    assert (
        kernels["blockwise_sdpa"]["within_tolerance"] is True and "varlen_flash" not in kernels
    )  # CUDA only
    assert report["train_step"]["results"]["fusion"]["tokens_per_s"] > 0
    assert report["decode"]["fusion_decode_tokens_per_s"] > 0 and "bound" in report["decode"]
    zero3 = report["zero3"]
    assert (zero3["backend"], zero3["world_size"], zero3["zero_stage"]) == ("gloo", 1, 3)
    assert zero3["partitioned_parameters"] > 0 and zero3["steps"] == 2 and zero3["finite"]


def test_a_failing_section_becomes_an_error_entry():
    def broken() -> dict:
        raise RuntimeError("CUDA out of memory (simulated)")

    entry = device_check.section("broken", broken)
    assert entry["error"] == "RuntimeError: CUDA out of memory (simulated)" and "seconds" in entry


def test_hbm_bandwidth_table_matches_gpu_names_most_specific_first():
    def match(name: str) -> float:
        return next(value for key, value in device_check.HBM_BANDWIDTH if key in name)

    assert match("NVIDIA H200") == 4.8e12
    assert match("NVIDIA H100 80GB HBM3") == 3.35e12  # SXM
    assert match("NVIDIA H100 PCIe") == 2.0e12
    assert match("NVIDIA H100 NVL") == 3.9e12
    assert device_check.hbm_bandwidth("cpu") is None


def test_decode_bytes_per_token_at_vicuna_7b_shapes():
    """The bytes behind the HBM bound, counted on a meta-device model at the GPU check's decode
    shapes (`--preset 7b`, bf16) and by hand: 32 layers of q/k/v/o (4 x 4096^2), the MLP
    (3 x 4096 x 11008) and two norms, the final norm and the LM head (32000 x 4096), no input
    embedding; the fusion branch at layer 0 (W_t2v 1024 x 4096, A and B 3 x 4096 x 1024, 3 alphas)."""
    args = device_check.generation.parse_args(
        [*device_check.SHAPES["gpu"]["decode"], "--device", "meta", "--dtype", "bfloat16"]
    )
    model = device_check._build(args, "fusion_llama")
    layer = 4 * 4096 * 4096 + 3 * 4096 * 11008 + 2 * 4096
    llm = 32 * layer + 4096 + 32000 * 4096
    fusion = 1024 * 4096 + 2 * (3 * 4096) * 1024 + 3
    positions = 600
    sizes = device_check.decode_bytes_per_token(model, positions)
    assert sizes["weights"] == 2 * (llm + fusion)
    assert sizes["fusion_branch"] == 2 * fusion
    assert sizes["kv_cache"] == 2 * 32 * 4096 * positions * 2  # k and v, 32 layers, 4096 wide, bf16
