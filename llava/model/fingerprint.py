"""What a checkpoint or data location holds, as a short stable string, to tell "the same model
(or data) as before" from "another one under the same name" when a run resumes.

A local folder's fingerprint hashes its `config.json` and, for each weight file, its name, size
and first and last MiB (a few MiB read for a 7B checkpoint, whose weights differ throughout
from any other's); a local file's hashes its whole content; a hub id is its own fingerprint (a
hub revision is not resolved here). An OpenCLIP `local-dir:FOLDER` location is that folder,
its `open_clip_config.json` hashed too. Moving a folder keeps its fingerprint; retraining into
it, or pointing at another model, changes it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_CHUNK = 1 << 20
_CONFIGS = ("config.json", "open_clip_config.json")
_LOCAL_DIR = "local-dir:"  # open_clip's prefix for a local folder


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def location_fingerprint(location: str | os.PathLike | None) -> str | None:
    """`sha256:...` of a local folder or file (see the module docstring), `hub:<id>` for
    anything else, None for None."""
    if location is None:
        return None
    text = os.fspath(location)
    path = Path(text.removeprefix(_LOCAL_DIR)).expanduser()
    if path.is_file():
        return f"sha256:{file_sha256(path)}"
    if not path.is_dir():
        return f"hub:{location}"
    digest = hashlib.sha256()
    for name in _CONFIGS:
        if (path / name).is_file():
            digest.update((path / name).read_bytes())
    for item in sorted(path.iterdir()):
        if item.is_file() and item.name.endswith(_WEIGHT_SUFFIXES):
            size = item.stat().st_size
            digest.update(f"{item.name}:{size}\n".encode())
            with item.open("rb") as f:
                digest.update(f.read(_CHUNK))
                f.seek(max(size - _CHUNK, 0))
                digest.update(f.read(_CHUNK))
    return f"sha256:{digest.hexdigest()}"
