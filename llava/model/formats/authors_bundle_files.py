"""Finding and checking an authors' bundle (`invllava-hub-release-v1`): every check their loader
makes before it builds a model, in its order, each refusal naming the file and field.

1. `COMPLETE` holds exactly `complete\\n` (the writer's last step before the checksums).
2. `checksums.sha256`: one `<sha256>  <file name>` line per file, no duplicate, not itself,
   listing at least `COMPLETE`, `metadata.json`, `inverse_llava_config.json` and
   `model_delta.safetensors`; every listed file is there and hashes to its line.
3. Both JSON files say `"format": "invllava-hub-release-v1"`; the config's `weights` is
   `model_delta.safetensors`; its `model` spec is one this project builds
   (`authors_bundle_spec.parse_spec`).
4. Neither base model's revision is mutable (`""`, `main`, `pending-freeze`).
5. The delta's sha256 is metadata's `model_delta_sha256`.
6. Metadata records how the omitted base weights were checked: either the exact verification of
   the fusion layers' base q/k/v/o against the pinned base, or pinned training inputs.

Added here: metadata's base and vision ids and revisions, when given, are the spec's; its tensor
names and count are the delta's; the delta holds exactly the spec's tensors, each of its shape.
Source: https://github.com/xuhuizhan5/Inverse-LLaVA at b1d7ab31fd8228ad7912bb697e1c4e77e2e4ef13,
`src/invllava/release/bundle.py` (`load_pretrained`, `_verify_checksums`,
`_validate_upstream_provenance`, `_resolve_release`).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from safetensors import SafetensorError, safe_open

from llava.model.formats.authors_bundle_spec import (
    BUNDLE_FILES,
    CHECKSUMS_FILE,
    COMPLETE_FILE,
    COMPLETE_TEXT,
    CONFIG_FILE,
    DELTA_FILE,
    FORMAT,
    METADATA_FILE,
    MUTABLE_REVISIONS,
    REQUIRED_CHECKSUMS,
    BundleError,
    BundleSpec,
    parse_spec,
)
from llava.model.paths import is_hub_id, resolve_location

DIGEST = re.compile(r"^[0-9a-f]{64}$")
# metadata.json field -> (spec section, field) it must agree with
_RECORDED_BASES = {
    "base_model": ("language", "checkpoint"),
    "base_model_revision": ("language", "revision"),
    "vision_model": ("vision", "checkpoint"),
    "vision_model_revision": ("vision", "revision"),
}


@dataclass(frozen=True)
class Bundle:
    """A bundle whose files passed every check; `revision` is the hub snapshot's, if any."""

    root: Path
    config: dict
    metadata: dict
    spec: BundleSpec
    delta_sha256: str
    revision: str | None = None

    @property
    def delta(self) -> Path:
        return self.root / DELTA_FILE


def is_authors_bundle(path: str | Path) -> bool:
    """A folder with the bundle's `inverse_llava_config.json` (cheap: file names only). Whether
    it is a complete, untampered bundle of the right format is `read_bundle`'s to say."""
    path = Path(path)
    return path.is_dir() and (path / CONFIG_FILE).is_file()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 23), b""):
            digest.update(chunk)
    return digest.hexdigest()


def checksum_lines(root: Path, names: list[str]) -> str:
    """The checksums file's text for `names` in `root`, as their writer writes it: sorted by
    name, `<sha256>  <name>`, one per line."""
    return "".join(f"{sha256_file(root / name)}  {name}\n" for name in sorted(names))


def _check_complete(root: Path) -> None:
    marker = root / COMPLETE_FILE
    if not marker.is_file():
        raise BundleError(
            f"{marker} is missing: the bundle is incomplete (its writer stopped, or the copy is partial)"
        )
    text = marker.read_text(encoding="utf-8", errors="replace")
    if text != COMPLETE_TEXT:
        raise BundleError(f"{marker} holds {text!r}, not {COMPLETE_TEXT!r}: the bundle is incomplete")


def read_checksums(root: Path) -> dict[str, str]:
    """File name -> sha256, from `checksums.sha256`, every line well-formed."""
    path = root / CHECKSUMS_FILE
    if not path.is_file():
        raise BundleError(f"{path} is missing: a bundle lists the sha256 of each of its files there")
    declared: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        digest, separator, name = line.partition("  ")
        if separator != "  " or not DIGEST.fullmatch(digest) or not name or Path(name).name != name:
            raise BundleError(f"{path}: line {number} {line!r} is not '<sha256>  <file name>'")
        if name in declared:
            raise BundleError(f"{path}: {name} is listed twice")
        if name == CHECKSUMS_FILE:
            raise BundleError(f"{path}: lists itself (line {number}); it cannot hold its own sha256")
        declared[name] = digest
    omitted = [name for name in REQUIRED_CHECKSUMS if name not in declared]
    if omitted:
        raise BundleError(f"{path}: omits the required file(s) {omitted}")
    return declared


def _check_checksums(root: Path) -> None:
    for name, digest in read_checksums(root).items():
        file = root / name
        if not file.is_file():
            raise BundleError(
                f"{file} is missing, though {CHECKSUMS_FILE} lists it: the bundle is incomplete"
            )
        actual = sha256_file(file)
        if actual != digest:
            raise BundleError(
                f"{file}: sha256 {actual} differs from {digest} in {CHECKSUMS_FILE}: the file was changed "
                "or damaged after the bundle was sealed"
            )


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise BundleError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(value, dict):
        raise BundleError(f"{path}: expected a JSON object, found a {type(value).__name__}")
    return value


def _check_provenance(metadata: dict, spec: BundleSpec, path: Path) -> None:
    """Their `_validate_upstream_provenance`: the bundle omits the base weights, so it must say
    how it made sure they are the pinned ones."""
    language, revision = spec.pinned("language")
    provenance = metadata.get("training_provenance") or {}
    if provenance.get("kind") == "pinned-training-inputs":
        inputs = provenance.get("checkpoint_inputs") or {}
        expected = {key: "@".join(spec.pinned(key)) for key in ("language", "vision")}
        wrong = sorted(key for key, value in expected.items() if inputs.get(key) != value)
        if wrong or not (provenance.get("integrity") or {}).get("complete"):
            raise BundleError(
                f"{path}: training_provenance disagrees with the spec's pinned inputs {expected} or is "
                f"not marked complete (checkpoint_inputs {inputs})"
            )
        if not DIGEST.fullmatch(str(provenance.get("resolved_config_sha256", ""))):
            raise BundleError(f"{path}: training_provenance.resolved_config_sha256 is not a sha256")
        return
    record = metadata.get("upstream_base_projection_verification") or {}
    expected = {
        "status": "exact",
        "base_model": language,
        "base_model_revision": revision,
        "omitted_from_release": True,
    }
    wrong = {key: record.get(key) for key, value in expected.items() if record.get(key) != value}
    if wrong:
        raise BundleError(
            f"{path}: upstream_base_projection_verification does not record an exact check of the omitted "
            f"base weights against {language}@{revision} (expected {expected}, found {wrong})"
        )


def _check_recorded_bases(metadata: dict, spec: BundleSpec, path: Path) -> None:
    for field, (section, key) in _RECORDED_BASES.items():
        if field in metadata and metadata[field] != spec.section(section)[key]:
            raise BundleError(
                f"{path}: {field} = {metadata[field]!r}, but {CONFIG_FILE} pins "
                f"model.{section}.{key} = {spec.section(section)[key]!r}"
            )


def read_bundle(root: str | Path, revision: str | None = None) -> Bundle:
    """The bundle in the local folder `root`, after checks 1-6 (module docstring) and the added
    metadata checks; tensors are checked by `check_tensors` once the base LLM's config is known.

    Raises:
        BundleError: naming the file (and field) of the first failed check.
    """
    root = Path(root)
    if not root.is_dir():
        raise BundleError(f"{root}: not a folder")
    _check_complete(root)
    _check_checksums(root)
    config_path, metadata_path = root / CONFIG_FILE, root / METADATA_FILE
    config, metadata = _read_json(config_path), _read_json(metadata_path)
    for path, value in ((config_path, config), (metadata_path, metadata)):
        if value.get("format") != FORMAT:
            raise BundleError(f"{path}: format is {value.get('format')!r}, this loader reads {FORMAT!r}")
    if config.get("weights") != DELTA_FILE:
        raise BundleError(f"{config_path}: weights is {config.get('weights')!r}, expected {DELTA_FILE!r}")
    spec = parse_spec(config.get("model"), config_path)
    for section in ("language", "vision"):
        repo, pinned = spec.pinned(section)
        if pinned in MUTABLE_REVISIONS:
            raise BundleError(
                f"{config_path}: model.{section}.revision of {repo} is {pinned!r}, which can change; a bundle "
                "pins its base models to a commit"
            )
    digest = sha256_file(root / DELTA_FILE)
    if digest != metadata.get("model_delta_sha256"):
        raise BundleError(
            f"{metadata_path}: model_delta_sha256 {metadata.get('model_delta_sha256')!r} is not the sha256 of "
            f"{DELTA_FILE} ({digest})"
        )
    _check_provenance(metadata, spec, metadata_path)
    _check_recorded_bases(metadata, spec, metadata_path)
    return Bundle(root, config, metadata, spec, digest, revision)


def tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Name -> shape of a safetensors file, read from its header only."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}
    except (SafetensorError, OSError) as error:
        raise BundleError(f"{path}: not a readable safetensors file ({error})") from error


def check_tensors(bundle: Bundle, expected: dict[str, tuple[int, ...]]) -> None:
    """The delta holds exactly the `expected` tensors (name -> shape), as metadata lists them."""
    shapes = tensor_shapes(bundle.delta)
    missing, extra = sorted(set(expected) - set(shapes)), sorted(set(shapes) - set(expected))
    if missing or extra:
        raise BundleError(
            f"{bundle.delta}: its tensors are not the spec's: {len(missing)} missing (e.g. {missing[:3]}), "
            f"{len(extra)} unexpected (e.g. {extra[:3]})"
        )
    wrong = [
        f"{name} {shapes[name]} (expected {expected[name]})"
        for name in sorted(shapes)
        if shapes[name] != expected[name]
    ]
    if wrong:
        raise BundleError(
            f"{bundle.delta}: {len(wrong)} tensor(s) have another shape: {'; '.join(wrong[:3])}"
        )
    metadata_path = bundle.root / METADATA_FILE
    names = bundle.metadata.get("tensor_names")
    if names is not None and names != sorted(shapes):
        raise BundleError(f"{metadata_path}: tensor_names are not the names of the tensors in {DELTA_FILE}")
    count = bundle.metadata.get("tensor_count")
    if count is not None and count != len(shapes):
        raise BundleError(f"{metadata_path}: tensor_count {count} differs from {DELTA_FILE}'s {len(shapes)}")


def hub_error(repo_id: str, revision: str | None, what: str, cache_dir, error: Exception) -> BundleError:
    """The refusal for a hub id that could not be resolved (offline: not in the cache)."""
    from huggingface_hub import constants

    cache = cache_dir or constants.HF_HUB_CACHE
    return BundleError(
        f"{what} {repo_id}@{revision or 'main'}: not available ({type(error).__name__}: {error}). Offline "
        f"(HF_HUB_OFFLINE=1 or local_files_only) it must be in the Hugging Face cache {cache}; or give a local folder"
    )


def resolve_bundle(
    location: str | Path, revision: str | None = None, cache_dir=None, local_files_only: bool = False
) -> tuple[Path, str | None]:
    """`(folder, hub revision)` of a bundle given as a local folder or a hub id (the snapshot of
    `revision` in the Hugging Face cache, downloaded unless offline; only the bundle's files)."""
    text = str(location)
    if Path(text).expanduser().is_dir() or not is_hub_id(text):
        return Path(resolve_location(text, "bundle")), None
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        folder = Path(
            snapshot_download(
                text,
                revision=revision,
                cache_dir=cache_dir,
                local_files_only=local_files_only,
                allow_patterns=list(BUNDLE_FILES),
            )
        )
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as error:
        raise hub_error(text, revision, "bundle", cache_dir, error) from error
    return folder, folder.name if folder.parent.name == "snapshots" else revision
