"""One-shot inference: one question about one or more images.

    python -m llava.eval.run_llava --model-path CKPT --image-file a.png[,b.png] --query "What is shown?"

Without `<image>` in the query, one `<image>` line per image is put in front of it; a query that
places its own `<image>`s must hold one per file. The answer is printed on stdout.

From Python, `eval_model(args)` takes the object of LLaVA-1.5's README quick start
(https://github.com/haotian-liu/LLaVA#quick-start-with-huggingface) as well as the parsed flags.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from typing import Any

from llava.cli_errors import run_command
from llava.inference import DecodingSettings, LoadedModel, open_conversation, with_image_tokens
from llava.inference.arguments import (
    add_decoding_arguments,
    add_image_file_arguments,
    add_model_arguments,
    load_image_files,
    load_model,
)

logger = logging.getLogger(__name__)

# What `eval_model` reads from its `args`: the fields of LLaVA's README quick start (less
# `model_name`, which the loader does not use) and this runner's `device` and `dtype`.
_FIELDS = (
    "model_path",
    "model_base",
    "query",
    "conv_mode",
    "image_file",
    "sep",
    "temperature",
    "top_p",
    "num_beams",
    "max_new_tokens",
    "device",
    "dtype",
)
_REQUIRED = ("model_path", "image_file", "query")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Answer one question about one or more images.")
    add_model_arguments(parser)
    add_image_file_arguments(parser)
    parser.add_argument("--query", required=True)
    add_decoding_arguments(parser, max_new_tokens=512, temperature=0.2)
    return parser


def _with_defaults(args: Any) -> argparse.Namespace:
    """`args` as this runner's flags: a field it lacks, or holds as None (as the README's
    `conv_mode`), takes the flag's default.

    Raises:
        ValueError: `model_path`, `image_file` or `query` is missing, naming them.
    """
    missing = [name for name in _REQUIRED if getattr(args, name, None) is None]
    if missing:
        raise ValueError(f"eval_model: args has no {', '.join(missing)}")
    parser = build_parser()
    values = {name: getattr(args, name, None) for name in _FIELDS}
    return argparse.Namespace(
        **{name: parser.get_default(name) if value is None else value for name, value in values.items()}
    )


def eval_model(args: Any, loaded: LoadedModel | None = None) -> str:
    """Print and return the answer to `args.query` about `args.image_file`, as LLaVA's
    `eval_model` does, loading the model unless `loaded` is given.

    `args`: the parsed flags, or any object with the fields of LLaVA's README quick start
    (`model_path`, `model_base`, `model_name`, `query`, `conv_mode`, `image_file`, `sep`,
    `temperature`, `top_p`, `num_beams`, `max_new_tokens`); what it lacks takes the flags'
    defaults. `conv_mode` None is the default template (`vicuna_v1`), never guessed from the
    checkpoint's name as LLaVA does; `model_name` is not used (the checkpoint's files decide how it
    loads); `device` None is CUDA when available, else the CPU.
    """
    args = _with_defaults(args)
    images = load_image_files(args)
    settings = DecodingSettings.from_args(args)
    loaded = loaded or load_model(args)
    conv = open_conversation(args.conv_mode, with_image_tokens(args.query, len(images)))
    logger.debug("prompt: %r", conv.get_prompt(loaded.tokenizer))
    answer = loaded.generate([loaded.prompt_ids(conv)], [loaded.encode_images(images)], settings)[0]
    print(answer)
    return answer


def main(argv: Sequence[str] | None = None) -> str:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return eval_model(build_parser().parse_args(argv))


if __name__ == "__main__":
    run_command(main)
