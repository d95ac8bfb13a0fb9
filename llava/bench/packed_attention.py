"""The attention kernels of one packed row, alone: what `--padding_free True` runs off
flash-attention (`llava.model.per_sample_attention`) against the alternatives, timed (forward +
backward) and checked against SDPA with the block-diagonal causal mask.

    python -m llava.bench.packed_attention [--json] [--device cpu|cuda] [--dtype float32]
        [--batch 16] [--image-positions 64] [--heads 8] [--kv-heads 8] [--head-dim 32]

The row packs `--batch` samples of `llava.bench.padding_free`'s mix (its lengths at
`--image-positions` image positions). Kernels:
- `blockwise_sdpa`: SDPA on each sample's causal block (the CPU path of `--padding_free True`);
- `varlen_flash`: PyTorch's varlen flash-attention, one call for the row (its CUDA bf16/fp16
  path; not run elsewhere);
- `packed_mask`: SDPA over the whole row with the block-diagonal causal mask (what transformers'
  packed-sequence mask makes SDPA compute: all `S^2` scores);
- `padded`: SDPA over the padded batch `[B, H, L_max, hd]`, causal (what padded batches compute).
Reported per kernel: median milliseconds over `--repeats` forward + backward passes, and, for the
packed ones, the largest difference of the output and of the q/k/v gradients to `packed_mask`,
relative to that reference's largest magnitude.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from llava.bench.padding_free import draw_samples, expanded_length
from llava.model.per_sample_attention import HALF_DTYPES, blockwise_sdpa, varlen_flash


def packed_row(lengths: list[int], heads: int, kv_heads: int, head_dim: int, device: str, dtype) -> dict:
    """Random q `[1, H, S, hd]`, k and v `[1, H_kv, S, hd]` (leaves with gradients) and the bounds."""
    generator = torch.Generator().manual_seed(0)
    row = sum(lengths)
    tensors = {
        name: torch.randn(1, n, row, head_dim, generator=generator).to(device, dtype).requires_grad_()
        for name, n in (("query", heads), ("key", kv_heads), ("value", kv_heads))
    }
    return {**tensors, "bounds": torch.tensor([0, *lengths]).cumsum(0).tolist()}


def block_diagonal_mask(bounds: list[int], device: str) -> torch.Tensor:
    """`[S, S]` bool: causal within each sample, nothing across samples."""
    ids = torch.repeat_interleave(torch.arange(len(bounds) - 1), torch.tensor(bounds).diff()).to(device)
    causal = torch.ones(bounds[-1], bounds[-1], dtype=torch.bool, device=device).tril()
    return causal & (ids[:, None] == ids[None, :])


def padded_attention(query, key, value, bounds) -> torch.Tensor:
    """The padded batch's attention: each sample's block right-padded to the longest, causal."""
    lengths = torch.tensor(bounds).diff().tolist()
    longest = max(lengths)

    def pad(t: torch.Tensor) -> torch.Tensor:  # [1, H, S, hd] -> [B, H, L_max, hd]
        return torch.cat([F.pad(block, (0, 0, 0, longest - block.shape[2])) for block in t.split(lengths, 2)])

    return F.scaled_dot_product_attention(pad(query), pad(key), pad(value), is_causal=True, enable_gqa=True)


def kernels(device: str, dtype: torch.dtype) -> dict[str, Callable]:
    """The kernels that run here, each `(query, key, value, bounds) -> output`."""
    available = {
        "blockwise_sdpa": lambda q, k, v, b: blockwise_sdpa(q, k, v, b, None, 0.0, None),
        "packed_mask": lambda q, k, v, b: F.scaled_dot_product_attention(
            q, k, v, attn_mask=block_diagonal_mask(b, q.device), enable_gqa=True
        ),
        "padded": padded_attention,
    }
    if device.startswith("cuda") and dtype in HALF_DTYPES:
        available["varlen_flash"] = lambda q, k, v, b: varlen_flash(q, k, v, b, None, None)
    return available


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def forward_backward(
    kernel: Callable, row: dict, device: str
) -> tuple[float, torch.Tensor, list[torch.Tensor]]:
    """(seconds, output, q/k/v gradients) of one forward + backward (the loss: the output's sum of squares)."""
    inputs = [row["query"], row["key"], row["value"]]
    _sync(device)
    start = time.perf_counter()
    out = kernel(*inputs, row["bounds"])
    grads = torch.autograd.grad(out.float().square().sum(), inputs)
    _sync(device)
    return time.perf_counter() - start, out, list(grads)


def relative_diff(got: torch.Tensor, expected: torch.Tensor) -> float:
    return ((got.float() - expected.float()).abs().max() / expected.float().abs().max()).item()


def run(
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    batch: int = 16,
    image_positions: int = 64,
    heads: int = 8,
    kv_heads: int = 8,
    head_dim: int = 32,
    repeats: int = 5,
) -> dict:
    lengths = [expanded_length(s, image_positions) for s in draw_samples(batch, image_positions)]
    row = packed_row(lengths, heads, kv_heads, head_dim, device, dtype)
    chosen = kernels(device, dtype)
    times: dict[str, list[float]] = {name: [] for name in chosen}
    outputs = {}
    for _ in range(1 + repeats):  # the first pass warms up
        for name, kernel in chosen.items():  # in turns: the same machine state for all
            seconds, out, grads = forward_backward(kernel, row, device)
            times[name].append(seconds)
            outputs[name] = (out, grads)
    reference_out, reference_grads = outputs["packed_mask"]
    results = {}
    for name in chosen:
        results[name] = {"ms": 1000 * statistics.median(times[name][1:])}
        if name != "padded":
            out, grads = outputs[name]
            results[name]["max_rel_diff_output"] = relative_diff(out, reference_out)
            results[name]["max_rel_diff_grads"] = max(map(relative_diff, grads, reference_grads))
    return {
        "device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
        "threads": torch.get_num_threads(),
        "dtype": str(dtype).removeprefix("torch."),
        "samples": batch,
        "row_positions": sum(lengths),
        "longest_sample": max(lengths),
        "heads": heads,
        "kv_heads": kv_heads,
        "head_dim": head_dim,
        "repeats": repeats,
        "results": results,
        "blockwise_over_packed_mask": results["blockwise_sdpa"]["ms"] / results["packed_mask"]["ms"],
        "blockwise_over_padded": results["blockwise_sdpa"]["ms"] / results["padded"]["ms"],
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    parser.add_argument("--batch", type=int, default=16, help="samples in the packed row")
    parser.add_argument("--image-positions", type=int, default=64)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--kv-heads", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    report = run(
        args.device,
        getattr(torch, args.dtype),
        args.batch,
        args.image_positions,
        args.heads,
        args.kv_heads,
        args.head_dim,
        args.repeats,
    )
    if args.json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        return report
    sys.stdout.write(
        f"{report['samples']} samples, {report['row_positions']} positions (longest {report['longest_sample']}) on "
        f"{report['device']} ({report['threads']} threads, {report['dtype']}), forward + backward, median of "
        f"{report['repeats']}\n"
    )
    for name, result in report["results"].items():
        diffs = ""
        if "max_rel_diff_output" in result:
            diffs = f"  rel. diff output {result['max_rel_diff_output']:.1e}, grads {result['max_rel_diff_grads']:.1e}"
        sys.stdout.write(f"  {name:15s} {result['ms']:9.2f} ms{diffs}\n")
    return report


if __name__ == "__main__":
    main()
