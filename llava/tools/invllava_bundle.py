"""Check, export and import the authors' published bundles (`invllava-hub-release-v1`).

    python -m llava.tools.invllava_bundle verify BUNDLE [--language DIR] [--vision DIR] [--load]
    python -m llava.tools.invllava_bundle export --checkpoint RUN --output-dir OUT \\
        [--language ID@COMMIT] [--vision ID@COMMIT]
    python -m llava.tools.invllava_bundle import BUNDLE --output-dir OUT

`BUNDLE` is a local folder or a hub id (`--revision`); the pinned base models come from the
Hugging Face cache (`HF_HUB_CACHE`; `HF_HUB_OFFLINE=1` or `--offline` never goes online) unless
`--language` / `--vision` name local folders. `verify` makes every check of loading (files,
checksums, format, pinned revisions, the delta's sha256 and tensors, the base models' identity
and shapes) and prints one line; `--load` also builds the model and loads the delta. `export`
writes a bundle from this project's LoRA run of the published layer (`--fusion_variant
published`); `import` writes such a run's folder from a bundle, which `--model-path OUT
--model-base <its base>` then loads. See docs/checkpoints.md.
"""

from __future__ import annotations

import argparse
import logging
import sys

import torch

from llava.cli_errors import run_command
from llava.model.formats.authors_bundle_load import open_bundle, read_authors_bundle
from llava.model.formats.authors_bundle_own import import_bundle
from llava.model.formats.authors_bundle_write import export_bundle


def _hub_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--revision", default=None, help="the bundle's hub revision (a hub id only)")
    parser.add_argument("--language", default=None, help="a local folder to use as the pinned LLM")
    parser.add_argument("--vision", default=None, help="a local folder to use as the pinned vision tower")
    parser.add_argument("--cache-dir", default=None, help="the Hugging Face cache (default: HF_HUB_CACHE)")
    parser.add_argument("--offline", action="store_true", help="use the cache only (as HF_HUB_OFFLINE=1)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    verify = commands.add_parser("verify", help="check a bundle as loading does")
    verify.add_argument("bundle", help="a bundle folder or hub id")
    _hub_options(verify)
    verify.add_argument("--load", action="store_true", help="also build the model and load the delta (fp32)")
    export = commands.add_parser("export", help="write a bundle from this project's LoRA run")
    export.add_argument("--checkpoint", required=True, help="a LoRA run of --fusion_variant published")
    export.add_argument("--output-dir", required=True, help="the bundle's folder (new)")
    export.add_argument("--language", default=None, help="the base LLM as <hub id>@<commit>")
    export.add_argument("--vision", default=None, help="the vision tower as <hub id>@<commit>")
    export.add_argument("--model-id", default=None, help="the spec's id (default: the output folder's name)")
    export.add_argument("--family", choices=("vicuna", "llama"), default="vicuna")
    export.add_argument("--max-length", type=int, default=2048, help="the spec's language.max_length")
    export.add_argument("--conv-mode", default=None, help="the conversation template (default vicuna_v1)")
    export.add_argument("--cache-dir", default=None)
    export.add_argument("--offline", action="store_true")
    imported = commands.add_parser("import", help="write this project's LoRA run folder from a bundle")
    imported.add_argument("bundle", help="a bundle folder or hub id")
    imported.add_argument("--output-dir", required=True, help="the run folder (new)")
    _hub_options(imported)
    return parser


def _hub(args) -> dict:
    return {
        "revision": args.revision,
        "language": args.language,
        "vision": args.vision,
        "cache_dir": args.cache_dir,
        "local_files_only": args.offline,
    }


def main(argv: list[str] | None = None):
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "export":
        return export_bundle(
            args.checkpoint,
            args.output_dir,
            language=args.language,
            vision=args.vision,
            model_id=args.model_id,
            family=args.family,
            max_length=args.max_length,
            conversation_template=args.conv_mode,
            cache_dir=args.cache_dir,
            local_files_only=args.offline,
        )
    if args.command == "import":
        return import_bundle(args.bundle, args.output_dir, **_hub(args))
    bundle, bases = open_bundle(args.bundle, **_hub(args))
    if args.load:
        read_authors_bundle(args.bundle, dtype=torch.float32, **_hub(args))
    spec = bundle.spec
    sys.stdout.write(
        f"OK {bundle.root}: {spec.raw['id']}, {bundle.metadata.get('tensor_count')} tensors "
        f"(sha256 {bundle.delta_sha256}); LLM {'@'.join(spec.pinned('language'))} at {bases.language}; "
        f"tower {'@'.join(spec.pinned('vision'))} at {bases.vision}{'; loaded' if args.load else ''}\n"
    )
    return bundle


if __name__ == "__main__":
    run_command(main)
