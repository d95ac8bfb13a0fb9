"""The lmms-eval model `inverse_llava`, on the inference engine; both of lmms-eval's model types.

    pip install -e ".[lmms]"
    python -m lmms_eval --model inverse_llava --model_args pretrained=CKPT[,model_base=B,conv_mode=vicuna_v1,dtype=bfloat16] \
        --tasks TASK --batch_size 8 [--force_simple]

Registered through lmms-eval's entry-point group `lmms_eval.models` (pyproject.toml), as
lmms-eval registers its own models: one id, both types. The chat type (the default) reads a task's
`doc_to_messages` (lmms-eval builds them from `doc_to_visual` and `doc_to_text` for a task that
has none); the simple type (`--force_simple`) reads `doc_to_text` and `doc_to_visual`. Either way
the prompt is built with the checkpoint's conversation template: a user message's images go in
front of its text, one `<image>` line each, as LLaVA's runners do, unless the text places its own
`<image>` placeholders; a message may hold any number of images, none included (a text-only
prompt). Images are PIL images or local files (a path, absolute or relative to the working
directory, or a `file://` URL); video, audio and remote URLs are refused with an error naming the
task and doc. Requests with equal generation settings are answered in left-padded batches of
`batch_size`; the task's `until` strings are stop strings. Greedy answers equal those of
`llava.eval.model_vqa_loader` for the same questions and `max_new_tokens`.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from lmms_eval.models.registry_v2 import ModelManifest
from lmms_eval.protocol import ChatMessages
from PIL import Image
from pydantic import ValidationError
from tqdm import tqdm

from llava.conversation import Conversation
from llava.inference import (
    DEFAULT_CONV_MODE,
    DecodingSettings,
    LoadedModel,
    conversation_from_messages,
    with_image_tokens,
)
from llava.inference.arguments import DTYPES
from llava.inference.images import ImageInputError, ImagePolicy, is_remote, load_image_input
from llava.inference.prompting import PromptError, open_conversation

logger = logging.getLogger(__name__)

MODEL_ID = "inverse_llava"
DEFAULT_MAX_NEW_TOKENS = 128
_GENERATION_KEYS = {"until", "max_new_tokens", "temperature", "top_p", "num_beams", "do_sample"}
# A task is code the user runs: its image files may lie anywhere, at any size Pillow decodes.
TASK_IMAGES = ImagePolicy(image_folder=Path(os.path.abspath(os.sep)), max_pixels=sys.maxsize)


def manifest() -> ModelManifest:
    """The entry point's payload: both model types under one id."""
    return ModelManifest(
        model_id=MODEL_ID,
        simple_class_path=f"{__name__}.InverseLlavaSimple",
        chat_class_path=f"{__name__}.InverseLlavaChat",
    )


def load_task_image(source: Any, name: str) -> Image.Image:
    """A task's image as RGB: a PIL image, or a local file (a path, absolute or relative to the
    working directory, or a `file://` URL).

    Raises:
        ImageInputError: a remote URL, a missing or unreadable file; the message starts with `name`.
    """
    if is_remote(source):
        raise ImageInputError(
            f"{name}: {MODEL_ID} does not fetch remote images; give the task's image as a PIL image or a local file"
        )
    if isinstance(source, (str, os.PathLike)) and not str(source).startswith(("data:", "file:")):
        source = os.path.abspath(source)
    return load_image_input(source, TASK_IMAGES, name)


def decoding_from(gen_kwargs: Mapping[str, Any]) -> DecodingSettings:
    """A task's `generation_kwargs` as decoding settings (greedy unless it samples)."""
    ignored = sorted(set(gen_kwargs) - _GENERATION_KEYS)
    if ignored:
        logger.warning("generation settings not used by %s: %s", MODEL_ID, ignored)
    until = gen_kwargs.get("until") or ()
    stop = (until,) if isinstance(until, str) else tuple(s for s in until if s)
    temperature = float(gen_kwargs.get("temperature") or 0.0)
    if gen_kwargs.get("do_sample") is False:
        temperature = 0.0
    top_p = gen_kwargs.get("top_p") if temperature > 0 else None
    return DecodingSettings(
        temperature=temperature,
        top_p=float(top_p) if top_p else None,
        num_beams=int(gen_kwargs.get("num_beams") or 1),
        max_new_tokens=int(gen_kwargs.get("max_new_tokens") or DEFAULT_MAX_NEW_TOKENS),
        stop=stop,
    )


class _InverseLlava(lmms):
    """What both model types share: loading, batching, generation."""

    gen_kwargs_arg: int  # where a request's `args` hold its generation settings

    def __init__(
        self,
        pretrained: str,
        model_base: str | None = None,
        conv_mode: str = DEFAULT_CONV_MODE,
        device: str | None = None,
        batch_size: int | str = 1,
        dtype: str = "auto",
        **unused: Any,
    ) -> None:
        super().__init__()
        if unused:
            raise ValueError(f"{MODEL_ID}: unknown model_args {sorted(unused)}")
        if dtype != "auto" and dtype not in DTYPES:
            raise ValueError(f"{MODEL_ID}: model_args dtype={dtype!r} is not one of {['auto', *DTYPES]}")
        self.engine = LoadedModel.load(pretrained, model_base or None, device=device, dtype=DTYPES.get(dtype))
        self.conv_mode = conv_mode
        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise ValueError(f"{MODEL_ID}: batch_size must be >= 1, got {batch_size}")

    def _prompt(self, request: Instance) -> tuple[Conversation, list[Any]]:
        """The request's open conversation and its images, in order of appearance."""
        raise NotImplementedError

    def _encoded(self, request: Instance) -> tuple[list[int], Any]:
        """The request's prompt ids and image pixels (on the model's device)."""
        conv, images = self._prompt(request)
        where = _where(request)
        loaded = [load_task_image(image, f"{where} image {k}") for k, image in enumerate(images)]
        return self.engine.prompt_ids(conv), self.engine.encode_images(loaded)

    def generate_until(self, requests: list[Instance]) -> list[str]:
        """Answers in request order; requests with equal settings share left-padded batches, whose
        images are read and encoded batch by batch (a task's images never sit in memory at once)."""
        answers: dict[int, str] = {}
        groups: dict[DecodingSettings, list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault(decoding_from(request.args[self.gen_kwargs_arg]), []).append(index)
        with tqdm(total=len(requests), desc=f"{MODEL_ID} responding", disable=self.rank != 0) as bar:
            for settings, indices in groups.items():
                for start in range(0, len(indices), self.batch_size):
                    batch = indices[start : start + self.batch_size]
                    prompts, pixels = zip(*(self._encoded(requests[i]) for i in batch), strict=True)
                    answers.update(
                        zip(batch, self.engine.generate(list(prompts), list(pixels), settings), strict=True)
                    )
                    bar.update(len(batch))
        return [answers[index] for index in range(len(requests))]

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        raise NotImplementedError(f"{MODEL_ID} answers generate_until tasks only (no loglikelihood scoring)")

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise NotImplementedError(f"{MODEL_ID} does not run multi-round tasks")


class InverseLlavaSimple(_InverseLlava):
    """The simple type: a task's `doc_to_text` and `doc_to_visual`."""

    is_simple = True
    gen_kwargs_arg = 1  # request.args: (context, gen_kwargs, doc_to_visual, doc_id, task, split)

    def _prompt(self, request: Instance) -> tuple[Conversation, list[Any]]:
        context, _, doc_to_visual, doc_id, task, split = request.args
        images = list(doc_to_visual(self.task_dict[task][split][doc_id]) or [])
        try:
            return open_conversation(self.conv_mode, with_image_tokens(context, len(images))), images
        except PromptError as err:
            raise PromptError(f"{_where(request)}: {err}") from err


class InverseLlavaChat(_InverseLlava):
    """The chat type: a task's `doc_to_messages` (text and image parts)."""

    is_simple = False
    gen_kwargs_arg = 2  # request.args: (context, doc_to_messages, gen_kwargs, doc_id, task, split)

    def _prompt(self, request: Instance) -> tuple[Conversation, list[Any]]:
        _, doc_to_messages, _, doc_id, task, split = request.args
        where = _where(request)
        try:
            messages = ChatMessages(messages=doc_to_messages(self.task_dict[task][split][doc_id]))
        except ValidationError as err:
            raise ValueError(
                f"{where}: doc_to_messages returned messages lmms-eval's protocol refuses: {err}"
            ) from err
        _, videos, audios = messages.extract_media()
        if videos or audios:
            raise ValueError(
                f"{where} holds video or audio, which {MODEL_ID} cannot take (images and text only)"
            )
        try:
            return conversation_from_messages(messages.to_hf_messages(), self.conv_mode)
        except PromptError as err:
            raise PromptError(f"{where}: {err}", err.param) from err


def _where(request: Instance) -> str:
    """How errors name a request: its task and doc."""
    return f"{MODEL_ID}: task {request.task_name} doc {request.doc_id}"
