"""What a number was computed with: the CPU kernels PyTorch dispatches to, its thread count, and
the versions of the libraries whose arithmetic it went through. Float sums are added in another
order under other kernels (AVX-512, AVX2, the scalar default), so a result is reported with these.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys

import torch

# Libraries whose versions decide a result's arithmetic or its training loop.
PACKAGES = ("torch", "transformers", "peft", "accelerate", "deepspeed", "flash-attn")


def package_version(package: str) -> str | None:
    """The installed version of `package`, or None when it is not installed."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_capability() -> str:
    """The CPU kernel family PyTorch dispatches to here (`AVX512`, `AVX2`, `DEFAULT`, ...), which
    `ATEN_CPU_CAPABILITY` can lower before torch is imported."""
    return torch.backends.cpu.get_cpu_capability()


def describe_environment() -> dict:
    """The conditions of a CPU computation: kernels, threads, library versions, Python, platform."""
    return {
        "cpu_capability": cpu_capability(),
        "aten_cpu_capability": os.environ.get("ATEN_CPU_CAPABILITY"),  # the override, if any
        "threads": torch.get_num_threads(),
        "versions": {name: package_version(name) for name in PACKAGES},
        "python": sys.version.split()[0],
        "machine": platform.machine(),
    }


def environment_line(environment: dict) -> str:
    """One line for a report: `AVX2 kernels, 2 thread(s), torch 2.13.0, transformers 5.24.0, ...`."""
    versions = ", ".join(f"{k} {v}" for k, v in environment["versions"].items() if v is not None)
    forced = environment.get("aten_cpu_capability")
    kernels = f"{environment['cpu_capability']} kernels" + (
        f" (ATEN_CPU_CAPABILITY={forced})" if forced else ""
    )
    return f"{kernels}, {environment['threads']} thread(s), {versions}, Python {environment['python']}"
