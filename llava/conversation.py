"""Conversation templates (LLaVA's prompt formats).

A conversation renders as a list of *segments*, each marked as supervised (an assistant reply
with its end token) or not. The prompt is the concatenation of the segments, and training masks
are built by tokenising the same segments, so the two cannot drift apart.

Formats follow LLaVA-1.5's templates:
https://github.com/haotian-liu/LLaVA/blob/main/llava/conversation.py
"""

from __future__ import annotations

import dataclasses
from enum import Enum


class SeparatorStyle(Enum):
    """How turns are joined."""

    TWO = "two"  # vicuna_v1: "SYSTEM USER: q ASSISTANT: a</s>USER: ..."
    LLAMA_2 = "llama_2"  # "[INST] <<SYS>>\nsys\n<</SYS>>\n\nq [/INST] a </s><s>[INST] ..."
    PLAIN = "plain"  # captions: "<image>caption\n"


@dataclasses.dataclass
class Conversation:
    """A prompt template plus the messages of one conversation."""

    name: str
    system: str
    roles: tuple[str, str]
    sep_style: SeparatorStyle
    sep: str
    sep2: str = ""
    messages: list[list[str | None]] = dataclasses.field(default_factory=list)

    def copy(self) -> Conversation:
        return dataclasses.replace(self, messages=[list(m) for m in self.messages])

    def append_message(self, role: str, message: str | None) -> None:
        if role not in self.roles:
            raise ValueError(
                f"unknown role {role!r} for template {self.name!r}; expected one of {self.roles}"
            )
        self.messages.append([role, message])

    def segments(self) -> list[tuple[str, bool]]:
        """The prompt as `(text, supervised)` pieces; assistant replies (with their end token) are
        the supervised pieces. A trailing assistant message of `None` leaves the prompt open for
        generation."""
        for i, (role, _) in enumerate(self.messages):
            if role != self.roles[i % 2]:
                raise ValueError(
                    f"template {self.name!r}: message {i} has role {role!r}, expected {self.roles[i % 2]!r} "
                    "(turns must alternate, user first)"
                )
        if self.sep_style is SeparatorStyle.TWO:
            return self._segments_two()
        if self.sep_style is SeparatorStyle.LLAMA_2:
            return self._segments_llama_2()
        return self._segments_plain()

    def get_prompt(self) -> str:
        return "".join(text for text, _ in self.segments())

    def _segments_two(self) -> list[tuple[str, bool]]:
        pieces: list[tuple[str, bool]] = []
        pending = self.system + self.sep
        for i, (role, message) in enumerate(self.messages):
            if i % 2 == 0:
                pending += f"{role}: {message}{self.sep}"
            elif message is None:
                pending += f"{role}:"
            else:
                pieces.append((pending + f"{role}:", False))
                pieces.append((f" {message}{self.sep2}", True))
                pending = ""
        if pending:
            pieces.append((pending, False))
        return pieces

    def _segments_llama_2(self) -> list[tuple[str, bool]]:
        pieces: list[tuple[str, bool]] = []
        for i, (_, message) in enumerate(self.messages):
            if i == 0:
                if not message:
                    raise ValueError(f"template {self.name!r}: the first user message is empty")
                if self.system:
                    message = f"<<SYS>>\n{self.system}\n<</SYS>>\n\n{message}"
            if i % 2 == 0:
                prefix = "" if i == 0 else self.sep
                pieces.append((f"{prefix}[INST] {message} [/INST]", False))
            elif message is not None:
                pieces.append((f" {message} {self.sep2}", True))
        return pieces

    def _segments_plain(self) -> list[tuple[str, bool]]:
        pieces: list[tuple[str, bool]] = [(self.system, False)] if self.system else []
        for i, (_, message) in enumerate(self.messages):
            if message is None:
                continue
            supervised = i % 2 == 1
            pieces.append((message + (self.sep if supervised else ""), supervised))
        return pieces


_VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
_LLAVA_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
_LLAVA_LLAMA_2_SYSTEM = (
    "You are a helpful language and vision assistant. You are able to understand the visual content that "
    "the user provides, and assist the user with a variety of tasks using natural language."
)

conv_vicuna_v1 = Conversation(
    name="vicuna_v1",
    system=_VICUNA_SYSTEM,
    roles=("USER", "ASSISTANT"),
    sep_style=SeparatorStyle.TWO,
    sep=" ",
    sep2="</s>",
)
conv_llava_v1 = dataclasses.replace(conv_vicuna_v1, name="llava_v1", system=_LLAVA_SYSTEM)
conv_llava_plain = Conversation(
    name="plain",
    system="",
    roles=("", ""),
    sep_style=SeparatorStyle.PLAIN,
    sep="\n",
)
conv_llava_llama_2 = Conversation(
    name="llava_llama_2",
    system=_LLAVA_LLAMA_2_SYSTEM,
    roles=("USER", "ASSISTANT"),
    sep_style=SeparatorStyle.LLAMA_2,
    sep="<s>",
    sep2="</s>",
)
conv_mistral_instruct = Conversation(
    name="mistral_instruct",
    system="",
    roles=("USER", "ASSISTANT"),
    sep_style=SeparatorStyle.LLAMA_2,
    sep="",
    sep2="</s>",
)

conv_templates: dict[str, Conversation] = {
    "vicuna_v1": conv_vicuna_v1,
    "v1": conv_vicuna_v1,
    "llava_v1": conv_llava_v1,
    "plain": conv_llava_plain,
    "llava_llama_2": conv_llava_llama_2,
    "mistral_instruct": conv_mistral_instruct,
}
default_conversation = conv_vicuna_v1


def get_conv_template(name: str) -> Conversation:
    """A fresh copy of the template registered as `name`."""
    try:
        return conv_templates[name].copy()
    except KeyError:
        raise ValueError(f"unknown conversation template {name!r}; known: {sorted(conv_templates)}") from None
