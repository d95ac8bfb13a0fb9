"""OpenCLIP vision towers as open_clip_torch builds them: where one comes from, and its config.

A tower location (`--vision_tower`, a config's `mm_vision_tower`) is OpenCLIP's when it starts
with one of three prefixes: open_clip's own two, and one for its built-in model names.

| location | what `open_clip.create_model` is given |
|---|---|
| `local-dir:<folder>` | the folder, in open_clip's hub layout: `open_clip_config.json` (`model_cfg`, `preprocess_cfg`) and the weights (`open_clip_model.safetensors` or `open_clip_pytorch_model.bin`) |
| `hf-hub:<org>/<name>` | the same files in a hub repository, through the Hugging Face cache (`HF_HUB_OFFLINE=1` works once cached) |
| `open_clip:<model>,<pretrained>` | `model_name=<model>` (`open_clip.list_models()`), `pretrained=<pretrained>`: a tag of `open_clip.list_pretrained_tags_by_model(<model>)` or a weights file |

The third spelling is open_clip's `--model` / `--pretrained` pair written the way CLIP_benchmark's
model lists write it (`ViT-B-32,laion2b_s34b_b79k`): `open_clip:ViT-B-32,laion2b_s34b_b79k` is
`open_clip.create_model("ViT-B-32", pretrained="laion2b_s34b_b79k")`. An architecture without
weights is refused (a frozen tower with random weights is of no use). A folder given without
`local-dir:` is read as a transformers checkpoint (`llava.model.vision_tower`).

`OpenClipVisionConfig` (model_type `open_clip_vision_model`) stores what open_clip builds the
vision tower from, `model_cfg` (the `embed_dim`, `quick_gelu` and `vision_cfg` of open_clip's
model config; `read_open_clip_config` writes out every field of open_clip's `CLIPVisionCfg`), and
the preprocessing `create_model` attaches to the model (`preprocess_cfg`: size, mode, mean, std,
interpolation, resize_mode, fill_color). It derives the fields the rest of the code reads
(`hidden_size`, `num_hidden_layers`, `image_size`, `patch_size`); so a checkpoint that holds the
tower's weights reloads without the original location, as a CLIP one does.

Supported: open_clip's own ViT (`VisionTransformer`: ViT-*, CLIPA, CoCa, DFN, MetaCLIP, ...) on
square images. Refused, naming the field: timm-built towers (`timm_model_name`: open_clip's
SigLIP, EVA, ConvNeXt, ...; SigLIP loads here through transformers) and the ResNets (`layers` a list).
`patch_dropout` is 0: the tower is frozen and runs as at inference.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

from llava.extras import require_extra

OPEN_CLIP_MODEL_TYPE = "open_clip_vision_model"
LOCAL_DIR, HF_HUB, BUILT_IN = "local-dir:", "hf-hub:", "open_clip:"
OPEN_CLIP_CONFIG = "open_clip_config.json"
OPEN_CLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
MODEL_CFG_KEYS = ("embed_dim", "quick_gelu", "vision_cfg")
PREPROCESS_KEYS = ("size", "mode", "mean", "std", "interpolation", "resize_mode", "fill_color")
# open_clip 3.3's CLIPVisionCfg defaults of the fields read here: a vision_cfg may leave them out,
# as open_clip's own model configs do (a test holds them equal to open_clip's).
VISION_DEFAULTS = {
    "layers": 12,
    "width": 768,
    "patch_size": 16,
    "image_size": 224,
    "patch_dropout": 0.0,
    "attentional_pool": False,
    "pool_type": "tok",
    "timm_model_name": None,
}
# open_clip's OpenAI normalisation (open_clip.constants), the default of its preprocess cfg.
OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_STD = [0.26862954, 0.26130258, 0.27577711]
# The config's default: open_clip's ViT-L-14-336-quickgelu (open_clip:ViT-L-14-336-quickgelu,openai),
# LLaVA-1.5's tower, as llava.model.configuration.CLIP_L_336 is for CLIP.
_DEFAULT_MODEL_CFG = {
    "embed_dim": 768,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 336, "layers": 24, "width": 1024, "patch_size": 14},
}
_DEFAULT_PREPROCESS_CFG = {
    "size": [336, 336],
    "mode": "RGB",
    "mean": OPENAI_MEAN,
    "std": OPENAI_STD,
    "interpolation": "bicubic",
    "resize_mode": "shortest",
    "fill_color": 0,
}
_INTERPOLATIONS = ("bicubic", "bilinear", "random")
_RESIZE_MODES = ("shortest", "longest", "squash")


def import_open_clip(what: str):
    """The `open_clip` module, or `MissingExtraError` naming the openclip extra."""
    require_extra(what, "openclip", "open_clip")
    import open_clip

    return open_clip


def _square(value, field: str) -> int:
    """An int, or a `[n, n]` pair, as an int; anything else is an error naming `field`."""
    if isinstance(value, (list, tuple)) and len(value) == 2 and value[0] == value[1]:
        value = value[0]
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"OpenCLIP {field}={value!r}: a square size is needed (an int or [n, n])")
    return value


def check_preprocess_cfg(cfg: dict, image_size: int | None = None) -> int:
    """Check an OpenCLIP preprocess cfg (every field, a square `size`, equal to `image_size` when
    given); returns the side in pixels."""
    if not isinstance(cfg, dict) or sorted(cfg) != sorted(PREPROCESS_KEYS):
        keys = sorted(cfg) if isinstance(cfg, dict) else cfg
        raise ValueError(f"OpenCLIP preprocess_cfg must hold exactly {list(PREPROCESS_KEYS)}, got {keys}")
    side = _square(cfg["size"], "preprocess_cfg size")
    if image_size is not None and side != image_size:
        raise ValueError(f"OpenCLIP preprocess_cfg size={cfg['size']!r}, but the tower takes {image_size} px")
    for field in ("mean", "std"):
        if len(cfg[field]) != 3:
            raise ValueError(f"OpenCLIP preprocess_cfg {field}={cfg[field]!r}: one value per RGB channel")
    checks = (("mode", ("RGB",)), ("interpolation", _INTERPOLATIONS), ("resize_mode", _RESIZE_MODES))
    for field, allowed in checks:
        if cfg[field] not in allowed:
            raise ValueError(
                f"OpenCLIP preprocess_cfg {field}={cfg[field]!r}: expected one of {list(allowed)}"
            )
    return side


@strict
class OpenClipVisionConfig(PreTrainedConfig):
    """An OpenCLIP ViT tower (see the module docstring).

    Args:
        model_cfg: `embed_dim`, `quick_gelu` (optional) and `vision_cfg` of open_clip's model config.
        preprocess_cfg: open_clip's preprocess cfg of the model, every field.
        hidden_size, num_hidden_layers, image_size, patch_size: derived from `vision_cfg`
            (width, layers, image_size, patch_size); a stored value must agree.
    """

    model_type = OPEN_CLIP_MODEL_TYPE
    base_config_key = "vision_config"

    model_cfg: dict | None = None
    preprocess_cfg: dict | None = None
    hidden_size: int | None = None
    num_hidden_layers: int | None = None
    image_size: int | None = None
    patch_size: int | None = None

    def __post_init__(self, **kwargs):
        if self.model_cfg is None:
            self.model_cfg = copy.deepcopy(_DEFAULT_MODEL_CFG)
        if self.preprocess_cfg is None:
            self.preprocess_cfg = copy.deepcopy(_DEFAULT_PREPROCESS_CFG)
        unknown = sorted(set(self.model_cfg) - set(MODEL_CFG_KEYS))
        embed_dim, vision_cfg = self.model_cfg.get("embed_dim"), self.model_cfg.get("vision_cfg")
        if unknown or not isinstance(embed_dim, int) or not isinstance(vision_cfg, dict):
            raise ValueError(
                f"OpenCLIP model_cfg holds {sorted(self.model_cfg)}: expected embed_dim and vision_cfg "
                "(and quick_gelu), the part of open_clip's model config its vision tower is built from"
            )
        vision = {**VISION_DEFAULTS, **vision_cfg}
        if vision["timm_model_name"] is not None:
            raise ValueError(
                f"OpenCLIP vision_cfg timm_model_name={vision['timm_model_name']!r}: towers built by timm are "
                "not supported, only open_clip's own ViTs (SigLIP loads as a transformers tower)"
            )
        if not isinstance(vision["layers"], int):
            raise ValueError(
                f"OpenCLIP vision_cfg layers={vision['layers']!r}: ResNet towers are not supported"
            )
        if vision["patch_dropout"] != 0:
            raise ValueError(
                f"OpenCLIP vision_cfg patch_dropout={vision['patch_dropout']}: the frozen tower runs without it (0)"
            )
        derived = {
            "hidden_size": vision["width"],
            "num_hidden_layers": vision["layers"],
            "image_size": _square(vision["image_size"], "vision_cfg image_size"),
            "patch_size": _square(vision["patch_size"], "vision_cfg patch_size"),
        }
        if derived["image_size"] % derived["patch_size"]:
            raise ValueError(
                f"OpenCLIP vision_cfg image_size={derived['image_size']} is not a multiple of "
                f"patch_size={derived['patch_size']}"
            )
        for field, value in derived.items():
            stored = getattr(self, field)
            if stored is not None and stored != value:
                raise ValueError(
                    f"OpenCLIP config {field}={stored} disagrees with its vision_cfg, which gives {value}"
                )
            setattr(self, field, value)
        check_preprocess_cfg(self.preprocess_cfg, derived["image_size"])
        super().__post_init__(**kwargs)


def cls_refusal(config: OpenClipVisionConfig) -> str | None:
    """Why the tower's first position (open_clip's class token, which every open_clip ViT has) is
    not a CLS summary, or None when it is: the tower pools something else."""
    vision = {**VISION_DEFAULTS, **config.model_cfg["vision_cfg"]}
    if vision["attentional_pool"]:
        return "pooling is an attentional pooler over all positions (attentional_pool), not its class token"
    if vision["pool_type"] != "tok":
        return f"pooling is pool_type={vision['pool_type']!r}, not its class token"
    return None


@dataclass(frozen=True)
class OpenClipLocation:
    """An OpenCLIP tower location, parsed into what `open_clip.create_model` is given."""

    text: str  # as the user wrote it
    model_name: str  # `local-dir:<folder>`, `hf-hub:<org>/<name>` or a built-in model name
    pretrained: str | None = None  # a tag or weights file, with a built-in name only
    folder: Path | None = None  # a local-dir: location's folder


def is_open_clip_location(text) -> bool:
    """Whether `text` names an OpenCLIP tower (one of the module docstring's prefixes)."""
    return isinstance(text, str) and text.startswith((LOCAL_DIR, HF_HUB, BUILT_IN))


def parse_open_clip_location(text: str) -> OpenClipLocation:
    """`text` parsed (see the module docstring).

    Raises:
        FileNotFoundError: a `local-dir:` folder that does not exist or lacks its config.
        ValueError: a malformed location (an architecture without weights included).
    """
    if text.startswith(LOCAL_DIR):
        folder = Path(text[len(LOCAL_DIR) :]).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"vision tower {text}: no such folder ({folder.absolute()})")
        if not (folder / OPEN_CLIP_CONFIG).is_file():
            raise FileNotFoundError(
                f"vision tower {text}: {folder / OPEN_CLIP_CONFIG} is missing (open_clip's hub layout: "
                f"{OPEN_CLIP_CONFIG} and {' or '.join(OPEN_CLIP_WEIGHTS)})"
            )
        return OpenClipLocation(text, f"{LOCAL_DIR}{folder}", folder=folder)
    if text.startswith(HF_HUB):
        org, _, name = text[len(HF_HUB) :].partition("/")
        if not org or not name or "/" in name:
            raise ValueError(f"vision tower {text}: expected hf-hub:<org>/<name>")
        return OpenClipLocation(text, text)
    if text.startswith(BUILT_IN):
        model, _, pretrained = text[len(BUILT_IN) :].partition(",")
        if not model or not pretrained:
            raise ValueError(
                f"vision tower {text}: expected open_clip:<model>,<pretrained> (e.g. "
                "open_clip:ViT-B-32,laion2b_s34b_b79k); an architecture alone has random weights"
            )
        return OpenClipLocation(text, model.replace("/", "-"), pretrained)  # open_clip's cleaning
    raise ValueError(f"{text} is not an OpenCLIP tower location ({LOCAL_DIR}, {HF_HUB} or {BUILT_IN})")


def _hub_layout_config(where: OpenClipLocation, open_clip) -> tuple[dict, dict]:
    """`(model_cfg, preprocess_cfg)` of a `local-dir:` or `hf-hub:` location's open_clip_config.json."""
    if where.folder is not None:
        source = where.folder / OPEN_CLIP_CONFIG
    else:
        from open_clip.pretrained import download_pretrained_from_hf

        try:
            source = download_pretrained_from_hf(where.text[len(HF_HUB) :], filename=OPEN_CLIP_CONFIG)
        except FileNotFoundError as error:
            raise FileNotFoundError(f"vision tower {where.text}: {error}") from error
    try:
        raw = json.loads(Path(source).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"vision tower {where.text}: cannot read {source}: {error}") from error
    if not isinstance(raw, dict) or not isinstance(raw.get("model_cfg"), dict):
        raise ValueError(f"vision tower {where.text}: {source} has no model_cfg (open_clip's hub layout)")
    return raw["model_cfg"], raw.get("preprocess_cfg") or {}


def _built_in_config(where: OpenClipLocation, open_clip) -> tuple[dict, dict]:
    """`(model_cfg, preprocess overlay)` of a built-in model with a pretrained tag or weights file,
    as `create_model` merges them."""
    model_cfg = open_clip.get_model_config(where.model_name)
    if model_cfg is None:
        raise ValueError(
            f"vision tower {where.text}: {where.model_name!r} is not one of open_clip's models "
            "(open_clip.list_models())"
        )
    tag = open_clip.get_pretrained_cfg(where.model_name, where.pretrained)
    if not tag:
        if os.path.isfile(where.pretrained):
            return model_cfg, {}
        raise ValueError(
            f"vision tower {where.text}: {where.pretrained!r} is neither a pretrained tag of {where.model_name} "
            f"{open_clip.list_pretrained_tags_by_model(where.model_name)} nor a weights file"
        )
    trained, built = tag.get("quick_gelu", False), model_cfg.get("quick_gelu", False)
    if trained != built:
        raise ValueError(
            f"vision tower {where.text}: the {where.pretrained!r} weights were trained with quick_gelu={trained}, "
            f"and {where.model_name} builds quick_gelu={built}; name the architecture that matches "
            "(open_clip's -quickgelu variants)"
        )
    return model_cfg, tag


def read_open_clip_config(location: str) -> OpenClipVisionConfig:
    """The `OpenClipVisionConfig` of an OpenCLIP tower location (see the module docstring), its
    preprocessing as `open_clip.create_model` sets it: open_clip's defaults, overlaid with the
    location's `preprocess_cfg` (or the pretrained tag's), at the tower's image size."""
    where = parse_open_clip_location(location)
    open_clip = import_open_clip(f"the OpenCLIP vision tower {location}")
    from open_clip.transform import PreprocessCfg, merge_preprocess_dict

    if where.pretrained is None:
        model_cfg, overlay = _hub_layout_config(where, open_clip)
    else:
        model_cfg, overlay = _built_in_config(where, open_clip)
    try:
        vision = asdict(open_clip.CLIPVisionCfg(**model_cfg.get("vision_cfg", {})))
    except TypeError as error:  # a field open_clip does not know
        raise ValueError(f"vision tower {location}: model_cfg.vision_cfg: {error}") from error
    vision["patch_dropout"] = 0.0  # frozen, as at inference (module docstring)
    preprocess = merge_preprocess_dict(PreprocessCfg(), overlay)
    side = _square(vision["image_size"], "vision_cfg image_size")
    preprocess.update(size=[side, side], mean=list(preprocess["mean"]), std=list(preprocess["std"]))
    cfg = {"embed_dim": model_cfg.get("embed_dim"), "quick_gelu": model_cfg.get("quick_gelu", False)}
    try:
        return OpenClipVisionConfig(model_cfg={**cfg, "vision_cfg": vision}, preprocess_cfg=preprocess)
    except ValueError as error:
        raise ValueError(f"vision tower {location}: {error}") from error
