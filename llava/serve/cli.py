"""Interactive multi-turn chat about one or more images, streamed to the terminal.

    python -m llava.serve.cli --model-path CKPT --image-file photo.png

The images go in front of the first message; every turn re-reads the whole conversation
(tokenised exactly as in training). An empty line or end of input (Ctrl-D) ends the session.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from PIL import Image

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


class ChatSession:
    """A conversation about fixed images; `ask` adds a turn and returns the reply."""

    def __init__(
        self, loaded: LoadedModel, images: Sequence[Image.Image], conv_mode: str, settings: DecodingSettings
    ) -> None:
        self.loaded = loaded
        self.conv_mode = conv_mode
        self.settings = settings
        self.num_images = len(images)
        self.pixels = loaded.encode_images(images)  # [N, 3, H, W] or None
        self.history: list[tuple[str, str]] = []

    @property
    def roles(self) -> tuple[str, str]:
        return open_conversation(self.conv_mode, "").roles

    def ask(self, message: str, on_delta: Callable[[str], None] | None = None) -> str:
        """The reply to `message`; `on_delta` receives it piece by piece as it is generated."""
        if not self.history:
            message = with_image_tokens(message, self.num_images)
        conv = open_conversation(self.conv_mode, message, self.history)
        logger.debug("prompt: %r", conv.get_prompt(self.loaded.tokenizer))
        ids = self.loaded.prompt_ids(conv)
        pieces = []
        for delta in self.loaded.stream(ids, self.pixels, self.settings):
            pieces.append(delta)
            if on_delta is not None:
                on_delta(delta)
        reply = "".join(pieces)
        logger.debug("reply: %r", reply)
        self.history.append((message, reply))
        return reply


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Chat with a model about images.")
    add_model_arguments(parser)
    add_image_file_arguments(parser)
    parser.add_argument("--load-8bit", action="store_true", help="8-bit weights (CUDA, bitsandbytes)")
    parser.add_argument("--load-4bit", action="store_true", help="4-bit weights (CUDA, bitsandbytes)")
    parser.add_argument("--debug", action="store_true", help="log each prompt and reply")
    add_decoding_arguments(parser, max_new_tokens=512, temperature=0.2, beams=False)
    return parser


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> ChatSession:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.debug:
        logger.setLevel(logging.DEBUG)
    images = load_image_files(args)
    loaded = load_model(args, load_8bit=args.load_8bit, load_4bit=args.load_4bit)
    session = ChatSession(loaded, images, args.conv_mode, DecodingSettings.from_args(args))
    user, assistant = session.roles
    while True:
        try:
            message = input(f"{user}: ")
        except EOFError:
            message = ""
        if not message.strip():
            _write("\n")
            logger.info("end of the conversation (%d turn(s))", len(session.history))
            return session
        _write(f"{assistant}: ")
        session.ask(message, _write)
        _write("\n")


if __name__ == "__main__":
    run_command(main)
