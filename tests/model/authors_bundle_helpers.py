"""Helpers of the authors' bundle tests: a tiny Hugging Face cache, bundles written by hand from
the format's facts (independently of `llava.model.formats.authors_bundle_write`), re-sealing
after a deliberate change, and the reference model a bundle must load as.

The facts (https://github.com/xuhuizhan5/Inverse-LLaVA at b1d7ab31fd8228ad7912bb697e1c4e77e2e4ef13:
`src/invllava/model/champion_checkpoint.py`, `src/invllava/release/bundle.py`,
`src/invllava/config/schema.py`, `src/invllava/model/adaptation.py`): six files; JSON with indent
2, sorted keys and a final newline; `checksums.sha256` lines `<sha256>  <name>` sorted by name,
not listing itself; fusion tensors `language_model.model.layers.L.self_attn.fusion.{text_to_vision,
output}.t.weight` (`[d_v, d_h]`, `[out_t, 2 d_v]`), `visual_norm.t.weight` (`[d_v]`), `scales.t`
(0-dim); LoRA `language_model.model.layers.N.{self_attn,mlp}.<m>_proj.lora_{a,b}.weight`
(`[r, in]`, `[out, r]`) on every layer but the fusion layers, applied as `W + (alpha / r) B A`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig

from llava.model.from_backbones import build_from_backbones

FORMAT = "invllava-hub-release-v1"
LANGUAGE_ID, VISION_ID, BUNDLE_ID = (
    "tiny-org/tiny-vicuna",
    "tiny-org/tiny-clip",
    "tiny-org/tiny-inverse-llava",
)
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")
# Their ModelSpec: top-level fields and each section's fields (schema.py).
SPEC_FIELDS = {
    "language": {"checkpoint", "revision", "family", "hidden_size", "num_layers", "image_token", "max_length",
                 "trust_remote_code", "rotary_precision"},
    "vision": {"checkpoint", "revision", "feature_layers", "feature_select", "feature_dim", "image_size",
               "aspect_ratio", "freeze", "processor_backend"},
    "fusion": {"layers", "targets", "operator", "mapper_rank", "trainable", "mapper_trainable",
               "visual_normalization", "visual_norm_eps", "scale_mode", "initial_scale", "mapper_init_std",
               "output_init_std", "initialization_id"},
    "adaptation": {"method", "rank", "alpha", "dropout", "trainable", "target_suffixes", "exclude_fusion_layers",
                   "excluded_layer_indices"},
}  # fmt: skip
TOP_FIELDS = {"id", "architecture", "language", "vision", "fusion", "projector", "adaptation", "torch_dtype"}


def revision_of(text: str) -> str:
    """A 40-hex commit id, made up from `text`."""
    return hashlib.sha1(text.encode()).hexdigest()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def add_to_cache(cache: Path, repo_id: str, revision: str, folder: Path) -> Path:
    """Put the files of `folder` into a Hugging Face cache as `repo_id` at `revision` (also its
    `main`): `models--org--name/blobs/<sha256>`, `snapshots/<revision>/<file>` linking to the
    blob, `refs/main` holding the revision. Returns the snapshot folder."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / revision
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        blob = repo / "blobs" / sha256(file)
        shutil.copyfile(file, blob)
        link = snapshot / file.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        up = len(link.relative_to(repo).parts) - 1  # from the link's folder back to the repo's
        link.symlink_to(Path(*[".."] * up, "blobs", blob.name))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    return snapshot


@dataclass(frozen=True)
class TinyHub:
    """A Hugging Face cache holding the tiny LLM and tower at pinned revisions."""

    cache: Path
    language: Path  # the snapshot folders
    vision: Path
    language_revision: str
    vision_revision: str


def make_tiny_hub(cache: Path, llm: str, vision: str) -> TinyHub:
    language_revision, vision_revision = revision_of("tiny-vicuna"), revision_of("tiny-clip")
    return TinyHub(
        cache,
        add_to_cache(cache, LANGUAGE_ID, language_revision, Path(llm)),
        add_to_cache(cache, VISION_ID, vision_revision, Path(vision)),
        language_revision,
        vision_revision,
    )


def tiny_spec(
    hub: TinyHub, feature_layers=(-1,), targets=("q", "k", "v"), excluded=(), rank=4, alpha=8, method="lora"
) -> dict:
    """A spec of their schema (every field) for the tiny backbones."""
    llm, tower = AutoConfig.from_pretrained(hub.language), AutoConfig.from_pretrained(hub.vision)
    return {
        "id": "tiny-inverse-llava",
        "architecture": "inverse_llava",
        "language": {
            "checkpoint": LANGUAGE_ID, "revision": hub.language_revision, "family": "vicuna",
            "hidden_size": llm.hidden_size, "num_layers": llm.num_hidden_layers, "image_token": "<image>",
            "max_length": 2048, "trust_remote_code": False, "rotary_precision": "model",
        },
        "vision": {
            "checkpoint": VISION_ID, "revision": hub.vision_revision, "feature_layers": list(feature_layers),
            "feature_select": "patch", "feature_dim": tower.hidden_size * len(feature_layers),
            "image_size": tower.image_size, "aspect_ratio": "pad", "freeze": True, "processor_backend": "torchvision",
        },
        "fusion": {
            "layers": [0], "targets": list(targets), "operator": "concat", "mapper_rank": None, "trainable": True,
            "mapper_trainable": True, "visual_normalization": "rms", "visual_norm_eps": 1e-06,
            "scale_mode": "learned", "initial_scale": 1.0, "mapper_init_std": None, "output_init_std": 0.0001,
            "initialization_id": "tiny-test",
        },
        "projector": None,
        "adaptation": {
            "method": method, "rank": rank, "alpha": alpha, "dropout": 0.05, "trainable": True,
            "target_suffixes": [*ATTENTION, *MLP], "exclude_fusion_layers": True,
            "excluded_layer_indices": list(excluded),
        },
        "torch_dtype": "bfloat16",
    }  # fmt: skip


def random_delta(spec: dict, llm_config, seed: int = 0) -> dict[str, torch.Tensor]:
    """bf16 tensors of every name and shape the spec's bundle holds, drawn at sizes that move
    the logits (scales near 1, norms near 1)."""
    generator = torch.Generator().manual_seed(seed)
    d_h, d_v = llm_config.hidden_size, spec["vision"]["feature_dim"]
    head = d_h // llm_config.num_attention_heads
    out = {"q": llm_config.num_attention_heads * head, "k": llm_config.num_key_value_heads * head}
    out["v"] = out["k"]
    sizes = {"q_proj": (d_h, out["q"]), "k_proj": (d_h, out["k"]), "v_proj": (d_h, out["v"]),
             "o_proj": (out["q"], d_h), "gate_proj": (d_h, llm_config.intermediate_size),
             "up_proj": (d_h, llm_config.intermediate_size), "down_proj": (llm_config.intermediate_size, d_h)}  # fmt: skip
    shapes = {}
    for layer in spec["fusion"]["layers"]:
        prefix = f"language_model.model.layers.{layer}.self_attn.fusion"
        for t in spec["fusion"]["targets"]:
            shapes[f"{prefix}.text_to_vision.{t}.weight"] = ((d_v, d_h), 0.2, 0.0)
            shapes[f"{prefix}.output.{t}.weight"] = ((out[t], 2 * d_v), 0.2, 0.0)
            shapes[f"{prefix}.visual_norm.{t}.weight"] = ((d_v,), 0.1, 1.0)
            shapes[f"{prefix}.scales.{t}"] = ((), 0.1, 1.0)
    skipped = set(spec["adaptation"]["excluded_layer_indices"]) | set(spec["fusion"]["layers"])
    rank = spec["adaptation"]["rank"]
    for layer in range(spec["language"]["num_layers"]):
        if layer in skipped or spec["adaptation"]["method"] != "lora":
            continue
        for module in spec["adaptation"]["target_suffixes"]:
            block = "self_attn" if module in ATTENTION else "mlp"
            prefix = f"language_model.model.layers.{layer}.{block}.{module}"
            size_in, size_out = sizes[module]
            shapes[f"{prefix}.lora_a.weight"] = ((rank, size_in), 0.1, 0.0)
            shapes[f"{prefix}.lora_b.weight"] = ((size_out, rank), 0.1, 0.0)
    return {
        name: (torch.randn(shape, generator=generator) * std + mean).to(torch.bfloat16)
        for name, (shape, std, mean) in shapes.items()
    }


def write_bundle(folder: Path, spec: dict, delta: dict[str, torch.Tensor]) -> Path:
    """A bundle written by hand from the facts, as their writer lays it out."""
    folder.mkdir(parents=True)
    save_file(delta, folder / "model_delta.safetensors")
    verification = {
        "status": "exact",
        "base_model": spec["language"]["checkpoint"],
        "base_model_revision": spec["language"]["revision"],
        "tensor_names": [f"language_model.model.layers.0.self_attn.{p}.weight" for p in ATTENTION],
        "omitted_from_release": True,
    }
    metadata = {
        "format": FORMAT,
        "source_format": "inverse-llava-author-peft-fusion-v1",
        "base_model": spec["language"]["checkpoint"],
        "base_model_revision": spec["language"]["revision"],
        "vision_model": spec["vision"]["checkpoint"],
        "vision_model_revision": spec["vision"]["revision"],
        "upstream_base_projection_verification": verification,
    }
    write_json(folder / "metadata.json", metadata)
    config = {"format": FORMAT, "model": spec, "weights": "model_delta.safetensors", "metadata": "metadata.json",
              "conversation_template": "vicuna_v1"}  # fmt: skip
    write_json(folder / "inverse_llava_config.json", config)
    (folder / "README.md").write_text("# tiny-inverse-llava\n")
    (folder / "COMPLETE").write_text("complete\n")
    return reseal(folder)


def reseal(folder: Path, delta_record: bool = True) -> Path:
    """Make the bundle's records agree with its files again after a deliberate change, so that a
    test reaches the check after the checksums: metadata's delta sha256, size, tensor names and
    count (unless `delta_record` is False), then `checksums.sha256`."""
    metadata = json.loads((folder / "metadata.json").read_text())
    if delta_record:
        delta = folder / "model_delta.safetensors"
        names = sorted(load_file(delta)) if delta.exists() else []
        metadata.update(model_delta_sha256=sha256(delta) if delta.exists() else None,
                        model_delta_size_bytes=delta.stat().st_size if delta.exists() else None,
                        tensor_count=len(names), tensor_names=names)  # fmt: skip
        write_json(folder / "metadata.json", metadata)
    files = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name != "checksums.sha256")
    (folder / "checksums.sha256").write_text("".join(f"{sha256(folder / n)}  {n}\n" for n in files))
    return folder


def edit_json(folder: Path, name: str, change) -> None:
    """Apply `change` to the JSON file `name` of the bundle and write it back."""
    value = json.loads((folder / name).read_text())
    change(value)
    write_json(folder / name, value)


def reference_model(hub: TinyHub, spec: dict, delta: dict[str, torch.Tensor]):
    """The model a bundle describes, put together by hand: this project's model of the published
    layer on the backbones, the fusion tensors copied in (scales as `[1]`), and every LoRA pair
    folded into its base weight as `W + (alpha / r) B A` (fp32)."""
    vision = spec["vision"]
    model, _ = build_from_backbones(
        "fusion_llama", str(hub.language), str(hub.vision), attn_implementation="eager",
        fusion_variant="published", fusion_layer_ids=spec["fusion"]["layers"],
        fusion_targets=spec["fusion"]["targets"], mm_vision_select_layer=vision["feature_layers"],
        mm_vision_select_feature=vision["feature_select"], image_aspect_ratio=vision["aspect_ratio"],
    )  # fmt: skip
    params = dict(model.named_parameters())
    scale = spec["adaptation"]["alpha"] / spec["adaptation"]["rank"]
    with torch.no_grad():
        for name, tensor in delta.items():
            own = name.removeprefix("language_model.")
            if ".fusion." in own:
                params[own].copy_(tensor.float().reshape(params[own].shape))
            elif own.endswith(".lora_a.weight"):
                module = own.removesuffix(".lora_a.weight")
                b = delta[f"language_model.{module}.lora_b.weight"].float()
                params[f"{module}.weight"].add_(scale * (b @ tensor.float()))
    return model.eval()
