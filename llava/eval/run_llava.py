"""One-shot inference: one question about one or more images.

    python -m llava.eval.run_llava --model-path CKPT --image-file a.png[,b.png] --query "What is shown?"

Without `<image>` in the query, one `<image>` line per image is put in front of it; a query that
places its own `<image>`s must hold one per file. The answer is printed on stdout.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from llava.inference import DecodingSettings, LoadedModel, open_conversation, with_image_tokens
from llava.inference.arguments import (
    add_decoding_arguments,
    add_image_file_arguments,
    add_model_arguments,
    load_image_files,
    load_model,
)

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Answer one question about one or more images.")
    add_model_arguments(parser)
    add_image_file_arguments(parser)
    parser.add_argument("--query", required=True)
    add_decoding_arguments(parser, max_new_tokens=512, temperature=0.2)
    return parser


def eval_model(args: argparse.Namespace, loaded: LoadedModel | None = None) -> str:
    """The answer to `args.query` about `args.image_file` (loading the model unless given)."""
    images = load_image_files(args)
    settings = DecodingSettings.from_args(args)
    loaded = loaded or load_model(args)
    conv = open_conversation(args.conv_mode, with_image_tokens(args.query, len(images)))
    logger.debug("prompt: %r", conv.get_prompt(loaded.tokenizer))
    return loaded.generate([loaded.prompt_ids(conv)], [loaded.encode_images(images)], settings)[0]


def main(argv: Sequence[str] | None = None) -> str:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    answer = eval_model(build_parser().parse_args(argv))
    print(answer)
    return answer


if __name__ == "__main__":
    main()
