"""The authors' published bundle format (`invllava-hub-release-v1`): its files, the model spec
its `inverse_llava_config.json` holds, and its tensor names, with their counterparts here.

Source: https://github.com/xuhuizhan5/Inverse-LLaVA at b1d7ab31fd8228ad7912bb697e1c4e77e2e4ef13:
`src/invllava/config/schema.py` (`ModelSpec` and its sections, unknown fields refused),
`src/invllava/release/bundle.py` (`load_pretrained`, `_verify_checksums`),
`src/invllava/model/champion_checkpoint.py` (the writer), `src/invllava/model/loaders.py` and
`src/invllava/model/adaptation.py` (which layers get LoRA, `scale = alpha / rank`).

Tensor names (the delta holds no base weight):

| bundle (`model_delta.safetensors`) | here |
|---|---|
| `language_model.model.layers.L.self_attn.fusion.<part>` (`scales.t`: 0-dim) | `model.layers.L.self_attn.fusion.<part>` (`scales.t`: `[1]`) |
| `language_model.model.layers.N.<self_attn/mlp>.<m>_proj.lora_a.weight` (`[r, in]`) | PEFT's `base_model.model.model.layers.N.<...>.<m>_proj.lora_A.weight` |
| `... .lora_b.weight` (`[out, r]`) | `... .lora_B.weight` |
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path

from llava.cli_errors import UserError

FORMAT = "invllava-hub-release-v1"
CONFIG_FILE = "inverse_llava_config.json"
METADATA_FILE = "metadata.json"
DELTA_FILE = "model_delta.safetensors"
COMPLETE_FILE = "COMPLETE"
CHECKSUMS_FILE = "checksums.sha256"
README_FILE = "README.md"
COMPLETE_TEXT = "complete\n"
# What their loader reads (`_resolve_release`'s allow_patterns) and must find listed in the checksums.
BUNDLE_FILES = (COMPLETE_FILE, README_FILE, CHECKSUMS_FILE, METADATA_FILE, CONFIG_FILE, DELTA_FILE)
REQUIRED_CHECKSUMS = (COMPLETE_FILE, METADATA_FILE, CONFIG_FILE, DELTA_FILE)
MUTABLE_REVISIONS = ("", "main", "pending-freeze")  # refused by their loader for both base models
CONVERSATION_TEMPLATE = "vicuna_v1"

_LANGUAGE = "language_model."
# Their LoRA target suffixes, in their default order, and the block each one lives in.
LORA_MODULES = {
    "q_proj": "self_attn",
    "k_proj": "self_attn",
    "v_proj": "self_attn",
    "o_proj": "self_attn",
    "gate_proj": "mlp",
    "up_proj": "mlp",
    "down_proj": "mlp",
}
FUSION_PARTS = ("text_to_vision", "output", "visual_norm", "scales")

_REQUIRED = object()
# Every field of their `ModelSpec` sections with its default (`_REQUIRED`: none).
SECTIONS: dict[str, dict[str, object]] = {
    "language": {
        "checkpoint": _REQUIRED,
        "revision": "pending-freeze",
        "family": "vicuna",
        "hidden_size": _REQUIRED,
        "num_layers": _REQUIRED,
        "image_token": "<image>",
        "max_length": 2048,
        "trust_remote_code": False,
        "rotary_precision": "model",
    },
    "vision": {
        "checkpoint": "openai/clip-vit-large-patch14-336",
        "revision": "pending-freeze",
        "feature_layers": [-1],
        "feature_select": "patch",
        "feature_dim": 1024,
        "image_size": 336,
        "aspect_ratio": "pad",
        "freeze": True,
        "processor_backend": "torchvision",
    },
    "fusion": {
        "layers": [0],
        "targets": ["q", "k", "v"],
        "operator": "concat",
        "mapper_rank": None,
        "trainable": True,
        "mapper_trainable": True,
        "visual_normalization": "rms",
        "visual_norm_eps": 1e-6,
        "scale_mode": "learned",
        "initial_scale": 1.0,
        "mapper_init_std": None,
        "output_init_std": 1e-4,
        "initialization_id": _REQUIRED,
    },
    "adaptation": {
        "method": "lora",
        "rank": 128,
        "alpha": 256,
        "dropout": 0.0,
        "trainable": True,
        "target_suffixes": list(LORA_MODULES),
        "exclude_fusion_layers": True,
        "excluded_layer_indices": [],
    },
}
TOP_LEVEL = ("id", "architecture", *SECTIONS, "projector", "torch_dtype")
TORCH_DTYPES = ("bfloat16", "float16", "float32")


class BundleError(UserError, ValueError):
    """A bundle this project refuses: incomplete, tampered, of another format, with an unpinned
    or different base model, or describing a model it cannot build. The message names the file
    (and the field or tensor)."""


@dataclass(frozen=True)
class BundleSpec:
    """The `model` object of a bundle's config, completed with their defaults and checked."""

    raw: dict  # every field, defaults filled in, in their JSON form
    source: Path  # the file it was read from, for messages

    def section(self, name: str) -> dict:
        return self.raw[name]

    @property
    def fusion_layers(self) -> list[int]:
        return list(self.raw["fusion"]["layers"])

    @property
    def fusion_targets(self) -> list[str]:
        return list(self.raw["fusion"]["targets"])

    @property
    def uses_lora(self) -> bool:
        return self.raw["adaptation"]["method"] == "lora"

    @property
    def lora_layers(self) -> list[int]:
        """The layers their loader wraps with LoRA: all but the excluded ones and, by default,
        the fusion layers."""
        adaptation = self.raw["adaptation"]
        if not self.uses_lora:
            return []
        skipped = set(adaptation["excluded_layer_indices"])
        if adaptation["exclude_fusion_layers"]:
            skipped |= set(self.fusion_layers)
        return [i for i in range(self.raw["language"]["num_layers"]) if i not in skipped]

    @property
    def lora_suffixes(self) -> list[str]:
        return list(self.raw["adaptation"]["target_suffixes"])

    def pinned(self, section: str) -> tuple[str, str]:
        """`(hub id, revision)` of the `language` or `vision` base model."""
        return self.raw[section]["checkpoint"], self.raw[section]["revision"]


def _fail(source: Path, field: str, problem: str) -> BundleError:
    return BundleError(f"{source}: model.{field} {problem}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _complete(section: str, given, source: Path) -> dict:
    """`given` with their defaults filled in; an unknown or missing required field is an error."""
    if not isinstance(given, dict):
        raise _fail(source, section, f"must be an object, found {type(given).__name__}")
    fields = SECTIONS[section]
    unknown = sorted(set(given) - set(fields))
    if unknown:
        raise _fail(source, section, f"has unknown field(s) {unknown} (their schema forbids extra fields)")
    missing = [name for name, default in fields.items() if default is _REQUIRED and name not in given]
    if missing:
        raise _fail(source, section, f"lacks the required field(s) {missing}")
    return {name: copy.deepcopy(given.get(name, default)) for name, default in fields.items()}


def section_defaults(name: str) -> dict:
    """Their default of every field of a spec section that has one (fresh copies)."""
    return {field: copy.deepcopy(value) for field, value in SECTIONS[name].items() if value is not _REQUIRED}


def _legacy_fusion_fields(fusion: dict, vision: dict, source: Path) -> dict:
    """Early v1 bundles spell out two no-op fields, which their loader drops after checking them."""
    fusion = dict(fusion)
    if fusion.pop("project_visual_features", False) is not False:
        raise _fail(
            source, "fusion.project_visual_features", "is set: a learned visual projection is not this model"
        )
    if "projection_dim" in fusion:
        width = fusion.pop("projection_dim")
        if not _is_int(width) or width != vision.get("feature_dim", SECTIONS["vision"]["feature_dim"]):
            raise _fail(source, "fusion.projection_dim", f"= {width!r} differs from model.vision.feature_dim")
    return fusion


def _check_choice(source: Path, field: str, value, allowed) -> None:
    """`value` is one of `allowed`, of its type too (`1` is not `True`, `0` not `False`)."""
    if not any(value == choice and type(value) is type(choice) for choice in allowed):
        raise _fail(source, field, f"= {value!r}; this project builds only {list(allowed)}")


def _check_positive(source: Path, field: str, value) -> None:
    if not _is_int(value) or value <= 0:
        raise _fail(source, field, f"= {value!r} must be a positive int")


def _check_layers(source: Path, field: str, value, depth: int) -> None:
    if not isinstance(value, list) or not all(_is_int(i) and 0 <= i < depth for i in value):
        raise _fail(source, field, f"= {value!r} must list layer indices in 0..{depth - 1}")
    if len(set(value)) != len(value):
        raise _fail(source, field, f"= {value!r} repeats a layer")


def _check_language(spec: dict, source: Path) -> None:
    language = spec["language"]
    for field in ("checkpoint", "revision"):
        if not isinstance(language[field], str):
            raise _fail(source, f"language.{field}", f"= {language[field]!r} must be a string")
    _check_positive(source, "language.hidden_size", language["hidden_size"])
    _check_positive(source, "language.num_layers", language["num_layers"])
    _check_choice(source, "language.family", language["family"], ("vicuna", "llama"))
    _check_choice(source, "language.trust_remote_code", language["trust_remote_code"], (False,))
    _check_choice(source, "language.rotary_precision", language["rotary_precision"], ("model", "float32"))


def _check_vision(spec: dict, source: Path) -> None:
    vision = spec["vision"]
    for field in ("checkpoint", "revision"):
        if not isinstance(vision[field], str):
            raise _fail(source, f"vision.{field}", f"= {vision[field]!r} must be a string")
    layers = vision["feature_layers"]
    if not isinstance(layers, list) or not layers or not all(_is_int(i) for i in layers):
        raise _fail(source, "vision.feature_layers", f"= {layers!r} must be a non-empty list of ints")
    _check_choice(source, "vision.feature_select", vision["feature_select"], ("patch", "cls_patch"))
    _check_positive(source, "vision.feature_dim", vision["feature_dim"])
    _check_positive(source, "vision.image_size", vision["image_size"])
    _check_choice(source, "vision.aspect_ratio", vision["aspect_ratio"], ("pad", "square"))
    # A trained tower would need its weights in the delta, which holds fusion and LoRA tensors only.
    _check_choice(source, "vision.freeze", vision["freeze"], (True,))
    _check_choice(source, "vision.processor_backend", vision["processor_backend"], ("torchvision", "pil"))


def _check_fusion(spec: dict, source: Path) -> None:
    fusion, depth = spec["fusion"], spec["language"]["num_layers"]
    _check_layers(source, "fusion.layers", fusion["layers"], depth)
    if not fusion["layers"]:
        raise _fail(source, "fusion.layers", "is empty: a model without fusion is not Inverse-LLaVA")
    targets = fusion["targets"]
    if not isinstance(targets, list) or not targets or not set(targets) <= {"q", "k", "v"}:
        raise _fail(source, "fusion.targets", f"= {targets!r} must list some of q, k, v")
    if len(set(targets)) != len(targets):
        raise _fail(source, "fusion.targets", f"= {targets!r} repeats a target")
    # The published layer (llava/model/published_fusion.py) is their concat operator with a full
    # text-to-vision map and an RMS visual norm of epsilon 1e-6; other settings are their ablations.
    _check_choice(source, "fusion.operator", fusion["operator"], ("concat",))
    _check_choice(source, "fusion.mapper_rank", fusion["mapper_rank"], (None,))
    _check_choice(source, "fusion.visual_normalization", fusion["visual_normalization"], ("rms",))
    _check_choice(source, "fusion.visual_norm_eps", fusion["visual_norm_eps"], (1e-6,))
    _check_choice(source, "fusion.scale_mode", fusion["scale_mode"], ("learned", "fixed"))
    scale = fusion["initial_scale"]
    if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not math.isfinite(scale):
        raise _fail(source, "fusion.initial_scale", f"= {scale!r} must be a finite number")


def _check_adaptation(spec: dict, source: Path) -> None:
    adaptation, depth = spec["adaptation"], spec["language"]["num_layers"]
    # "full" would need every base weight in the delta; "frozen" has no LoRA tensors.
    _check_choice(source, "adaptation.method", adaptation["method"], ("lora", "frozen"))
    _check_positive(source, "adaptation.rank", adaptation["rank"])
    alpha, dropout = adaptation["alpha"], adaptation["dropout"]
    if not _is_int(alpha) or alpha < 0:
        raise _fail(source, "adaptation.alpha", f"= {alpha!r} must be a non-negative int")
    if not isinstance(dropout, (int, float)) or isinstance(dropout, bool) or not 0 <= dropout < 1:
        raise _fail(source, "adaptation.dropout", f"= {dropout!r} must be in [0, 1)")
    suffixes = adaptation["target_suffixes"]
    if not isinstance(suffixes, list) or not suffixes or not set(suffixes) <= set(LORA_MODULES):
        raise _fail(
            source, "adaptation.target_suffixes", f"= {suffixes!r} must list some of {list(LORA_MODULES)}"
        )
    if len(set(suffixes)) != len(suffixes):
        raise _fail(source, "adaptation.target_suffixes", f"= {suffixes!r} repeats a module")
    _check_layers(source, "adaptation.excluded_layer_indices", adaptation["excluded_layer_indices"], depth)
    if not isinstance(adaptation["exclude_fusion_layers"], bool):
        raise _fail(source, "adaptation.exclude_fusion_layers", "must be true or false")


def parse_spec(model, source: Path) -> BundleSpec:
    """The checked spec of a bundle's `model` object (read from `source`).

    Raises:
        BundleError: an unknown or missing field, a value of the wrong kind, or a model this
            project cannot build, naming `source` and the field.
    """
    if not isinstance(model, dict):
        raise BundleError(f"{source}: model must be an object, found {type(model).__name__}")
    unknown = sorted(set(model) - set(TOP_LEVEL))
    if unknown:
        raise BundleError(
            f"{source}: model has unknown field(s) {unknown} (their schema forbids extra fields)"
        )
    for name in ("id", "architecture", *SECTIONS):
        if name not in model:
            raise BundleError(f"{source}: model lacks the required field {name!r}")
    raw = {"id": model["id"], "architecture": model["architecture"]}
    fusion = model["fusion"]
    if isinstance(fusion, dict) and isinstance(model["vision"], dict):
        fusion = _legacy_fusion_fields(fusion, model["vision"], source)
    for name in SECTIONS:
        raw[name] = _complete(name, fusion if name == "fusion" else model[name], source)
    raw["projector"] = model.get("projector")
    raw["torch_dtype"] = model.get("torch_dtype", "bfloat16")
    _check_choice(source, "architecture", raw["architecture"], ("inverse_llava",))
    if raw["projector"] is not None:
        raise _fail(source, "projector", "is set: Inverse-LLaVA has no early vision-to-language projector")
    _check_choice(source, "torch_dtype", raw["torch_dtype"], TORCH_DTYPES)
    _check_language(raw, source)
    _check_vision(raw, source)
    _check_fusion(raw, source)
    _check_adaptation(raw, source)
    return BundleSpec(raw=raw, source=source)


def fusion_names(spec: BundleSpec) -> dict[str, str]:
    """Bundle name -> this model's parameter name, for every fusion tensor of the spec."""
    names = {}
    for layer in spec.fusion_layers:
        for target in spec.fusion_targets:
            for part in FUSION_PARTS:
                suffix = f"fusion.{part}.{target}" + ("" if part == "scales" else ".weight")
                own = f"model.layers.{layer}.self_attn.{suffix}"
                names[_LANGUAGE + own] = own
    return names


def lora_module(layer: int, suffix: str) -> str:
    """`model.layers.3.mlp.up_proj`: the full name of a LoRA target module here."""
    return f"model.layers.{layer}.{LORA_MODULES[suffix]}.{suffix}"


def lora_names(spec: BundleSpec) -> dict[str, str]:
    """Bundle name -> PEFT's saved key (`base_model.model.<module>.lora_A.weight`), for every
    LoRA tensor of the spec."""
    names = {}
    for layer in spec.lora_layers:
        for suffix in spec.lora_suffixes:
            module = lora_module(layer, suffix)
            for theirs, peft in (("a", "A"), ("b", "B")):
                names[f"{_LANGUAGE}{module}.lora_{theirs}.weight"] = (
                    f"base_model.model.{module}.lora_{peft}.weight"
                )
    return names


def expected_shapes(spec: BundleSpec, llm_config) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor the bundle must hold, on the base LLM of `llm_config`."""
    d_h, d_v = llm_config.hidden_size, spec.section("vision")["feature_dim"]
    head_dim = getattr(llm_config, "head_dim", None) or d_h // llm_config.num_attention_heads
    kv_heads = getattr(llm_config, "num_key_value_heads", None) or llm_config.num_attention_heads
    width = {
        "q": llm_config.num_attention_heads * head_dim,
        "k": kv_heads * head_dim,
        "v": kv_heads * head_dim,
    }
    shapes = {}
    for name in fusion_names(spec):
        part, target = name.split(".fusion.")[1].split(".")[:2]
        shapes[name] = {
            "text_to_vision": (d_v, d_h),
            "output": (width[target], 2 * d_v),
            "visual_norm": (d_v,),
            "scales": (),
        }[part]
    inter, rank = llm_config.intermediate_size, spec.section("adaptation")["rank"]
    sizes = {  # (in, out) of each LoRA target
        "q_proj": (d_h, width["q"]),
        "k_proj": (d_h, width["k"]),
        "v_proj": (d_h, width["v"]),
        "o_proj": (width["q"], d_h),
        "gate_proj": (d_h, inter),
        "up_proj": (d_h, inter),
        "down_proj": (inter, d_h),
    }
    for name in lora_names(spec):
        size_in, size_out = sizes[name.split(".")[-3]]
        shapes[name] = (rank, size_in) if name.endswith("lora_a.weight") else (size_out, rank)
    return shapes


def config_fields(spec: BundleSpec) -> dict:
    """The fields of this project's `FusionLlamaConfig` (on top of the backbones') that build the
    spec's model: the published layer where it says, the tower's layers and features as it says."""
    vision, fusion = spec.section("vision"), spec.section("fusion")
    return {
        "fusion_variant": "published",
        "fusion_layer_ids": list(fusion["layers"]),
        "fusion_targets": list(fusion["targets"]),
        "fusion_alpha": float(fusion["initial_scale"]),
        "mm_vision_select_layer": list(vision["feature_layers"]),
        "mm_vision_select_feature": vision["feature_select"],
        "image_aspect_ratio": vision["aspect_ratio"],
        "mm_hidden_size": vision["feature_dim"],
    }
