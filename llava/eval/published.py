"""Published numbers the report puts beside measured ones, each table kept as printed: the
paper's (Vicuna-7B, Table 1 and the MME totals of its Figure 3 discussion) and the authors' 2026
release's (their retrained Inverse-LLaVA against the official LLaVA-1.5 LoRA and full fine-tuning
checkpoints, under shared evaluation protocols rather than matched training; their README at
xuhuizhan5/Inverse-LLaVA@b1d7ab31). Keys are `llava.eval.benchmarks` names; the authors' VQAv2 is
test-dev and their SQA is ScienceQA-IMG, as in the paper's columns.
"""

from __future__ import annotations

from dataclasses import dataclass

PAPER_SUFFIX = " (paper)"
AUTHORS_SUFFIX = " (authors 2026)"

# The paper's Table 1 (Vicuna-7B), kept as printed.
PAPER_TABLE1: dict[str, dict[str, str]] = {
    "LLaVA-1.5": {
        "mmvet": "31.1", "vizwiz": "50.0", "sqa": "66.80", "mmbench": "64.3", "mmbench_cn": "58.3",
        "mme": "1510.7", "vqav2": "78.5", "textvqa": "58.2", "gqa": "62.0",
    },
    "Inverse-LLaVA": {
        "mmvet": "31.2", "vizwiz": "50.95", "sqa": "67.84", "mmbench": "54.55", "mmbench_cn": "41.84",
        "mme": "1293.15", "vqav2": "74.76", "textvqa": "52.02", "gqa": "58.46",
    },
    "Inverse-LLaVA-HD": {"mme": "1335.67", "gqa": "59.33"},
}  # fmt: skip

# MME totals the paper reports (Figure 3 discussion).
PAPER_MME_TOTALS: dict[str, dict[str, str]] = {
    "LLaVA-1.5-7B-LoRA": {"perception": "1477.05", "cognition": "257.86"},
    "Inverse-LLaVA": {"perception": "1293.15", "cognition": "328.21"},
    "Inverse-LLaVA-HD": {"perception": "1335.67"},
}

# The authors' 2026 README: their retrained 7B model and the official LLaVA-1.5 checkpoints.
AUTHORS_TABLE1: dict[str, dict[str, str]] = {
    "Inverse-LLaVA": {
        "mmvet": "28.67", "vizwiz": "50.96", "sqa": "69.61", "mmbench": "62.63", "mmbench_cn": "54.04",
        "mme": "1453.82", "vqav2": "78.45", "textvqa": "56.96", "gqa": "62.28",
    },
    "LLaVA-1.5 LoRA": {
        "mmvet": "31.24", "vizwiz": "48.56", "sqa": "68.82", "mmbench": "67.10", "mmbench_cn": "58.93",
        "mme": "1484.58", "vqav2": "79.13", "textvqa": "58.47", "gqa": "62.63",
    },
    "LLaVA-1.5 FFT": {
        "mmvet": "29.68", "vizwiz": "50.64", "sqa": "69.11", "mmbench": "65.12", "mmbench_cn": "58.33",
        "mme": "1507.28", "vqav2": "78.55", "textvqa": "58.21", "gqa": "61.89",
    },
}  # fmt: skip

AUTHORS_MME_TOTALS: dict[str, dict[str, str]] = {
    "Inverse-LLaVA": {"perception": "1453.82", "cognition": "279.29"},
    "LLaVA-1.5 LoRA": {"perception": "1484.58", "cognition": "258.21"},
    "LLaVA-1.5 FFT": {"perception": "1507.28", "cognition": "344.64"},
}


@dataclass(frozen=True)
class Reference:
    """One source of published numbers: the suffix its rows carry in the report, its Table 1
    cells by benchmark, and its MME perception / cognition totals."""

    suffix: str
    table1: dict[str, dict[str, str]]
    mme_totals: dict[str, dict[str, str]]


REFERENCES: tuple[Reference, ...] = (
    Reference(PAPER_SUFFIX, PAPER_TABLE1, PAPER_MME_TOTALS),
    Reference(AUTHORS_SUFFIX, AUTHORS_TABLE1, AUTHORS_MME_TOTALS),
)
