"""Conversation templates (LLaVA's prompt formats).

A conversation renders as a list of *segments*, each marked as supervised (an assistant reply
with its end token) or not. The prompt is the concatenation of the segments, and training masks
are built by tokenising the same segments, so the two cannot drift apart.

Formats follow LLaVA-1.5's templates, and LLaVA-NeXT's `llava_llama_3` / `qwen_1_5` for Llama-3 and
Qwen's ChatML (https://github.com/LLaVA-VL/LLaVA-NeXT/blob/main/llava/conversation.py):
https://github.com/haotian-liu/LLaVA/blob/main/llava/conversation.py

`llama_3` and `qwen_2` are written out here (their special tokens must be in the tokenizer's
vocabulary); `chat_template` renders with the tokenizer's own chat template instead.
"""

from __future__ import annotations

import dataclasses
from enum import Enum


class SeparatorStyle(Enum):
    """How turns are joined."""

    TWO = "two"  # vicuna_v1: "SYSTEM USER: q ASSISTANT: a</s>USER: ..."
    LLAMA_2 = "llama_2"  # "[INST] <<SYS>>\nsys\n<</SYS>>\n\nq [/INST] a </s><s>[INST] ..."
    PLAIN = "plain"  # captions: "<image>caption\n"
    LLAMA_3 = (
        "llama_3"  # "<|start_header_id|>user<|end_header_id|>\n\nq<|eot_id|><|start_header_id|>assistant..."
    )
    CHATML = "chatml"  # Qwen: "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\na<|im_end|>\n"
    CHAT_TEMPLATE = "chat_template"  # the tokenizer's own chat template (jinja)


# Header of a turn by role, for the header-style templates; the turn ends with `sep2` (its end
# token, supervised after an answer, as Vicuna's `</s>`) and then `sep` (not supervised).
_HEADERS = {
    SeparatorStyle.LLAMA_3: "<|start_header_id|>{role}<|end_header_id|>\n\n",
    SeparatorStyle.CHATML: "<|im_start|>{role}\n",
}


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

    def segments(self, tokenizer=None) -> list[tuple[str, bool]]:
        """The prompt as `(text, supervised)` pieces; assistant replies (with their end token) are
        the supervised pieces. A trailing assistant message of `None` leaves the prompt open for
        generation. `tokenizer`: needed by `chat_template` only, whose text its template renders."""
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
        if self.sep_style in _HEADERS:
            return self._segments_headed(_HEADERS[self.sep_style])
        if self.sep_style is SeparatorStyle.CHAT_TEMPLATE:
            return self._segments_chat_template(tokenizer)
        return self._segments_plain()

    def get_prompt(self, tokenizer=None) -> str:
        return "".join(text for text, _ in self.segments(tokenizer))

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

    def _segments_headed(self, header: str) -> list[tuple[str, bool]]:
        """Llama-3 and ChatML: every turn is `header(role) message sep2 sep`, with `sep2` the
        end-of-turn token; an answer's `message sep2` is supervised, its header and `sep` are not."""
        pieces: list[tuple[str, bool]] = []
        end = self.sep2 + self.sep
        pending = header.format(role="system") + self.system + end if self.system else ""
        for i, (role, message) in enumerate(self.messages):
            if i % 2 == 0:
                pending += header.format(role=role) + f"{message}{end}"
            elif message is None:
                pending += header.format(role=role)
            else:
                pieces.append((pending + header.format(role=role), False))
                pieces.append((f"{message}{self.sep2}", True))
                pending = self.sep
        if pending:
            pieces.append((pending, False))
        return pieces

    def _segments_chat_template(self, tokenizer) -> list[tuple[str, bool]]:
        """The tokenizer's chat template, rendered prefix by prefix: an answer's piece is what
        rendering it adds after the generation prompt (the answer and the template's end-of-turn
        text, trailing whitespace left unsupervised). Templates that rewrite earlier turns (e.g.
        Qwen3's, which drops past reasoning) cannot be split this way and are an error."""
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                f"template {self.name!r} renders with the tokenizer's own chat template, and "
                f"{getattr(tokenizer, 'name_or_path', 'no tokenizer')!r} has none: choose a named template"
            )
        chat = [{"role": "system", "content": self.system}] if self.system else []
        chat += [{"role": role, "content": message} for role, message in self.messages]

        def render(upto: int, prompt: bool) -> str:
            return tokenizer.apply_chat_template(chat[:upto], tokenize=False, add_generation_prompt=prompt)

        pieces: list[tuple[str, bool]] = []
        done = ""
        offset = 1 if self.system else 0
        for i, (_, message) in enumerate(self.messages):
            if i % 2 == 0 or message is None:
                continue
            prompt, full = render(offset + i, True), render(offset + i + 1, False)
            if not (prompt.startswith(done) and full.startswith(prompt)):
                raise ValueError(
                    f"template {self.name!r}: the chat template of {tokenizer.name_or_path!r} rewrites earlier "
                    f"turns at message {i}, so its answers cannot be marked; choose a named template"
                )
            answer = full[len(prompt) :]
            body = answer.rstrip()
            pieces += [(prompt[len(done) :], False), (body, True)]
            done = prompt + body
        last_open = self.messages and self.messages[-1][1] is None
        rest = render(offset + len(self.messages) - 1, True) if last_open else render(len(chat), False)
        if not rest.startswith(done):
            raise ValueError(
                f"template {self.name!r}: the chat template of {tokenizer.name_or_path!r} rewrites earlier turns"
            )
        if rest[len(done) :]:
            pieces.append((rest[len(done) :], False))
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
conv_llama_3 = Conversation(
    name="llama_3",
    system=_LLAVA_LLAMA_2_SYSTEM,
    roles=("user", "assistant"),
    sep_style=SeparatorStyle.LLAMA_3,
    sep="",
    sep2="<|eot_id|>",
)
conv_qwen_2 = Conversation(
    name="qwen_2",
    system="You are a helpful assistant.",
    roles=("user", "assistant"),
    sep_style=SeparatorStyle.CHATML,
    sep="\n",
    sep2="<|im_end|>",
)
conv_chat_template = Conversation(
    name="chat_template",
    system="",
    roles=("user", "assistant"),
    sep_style=SeparatorStyle.CHAT_TEMPLATE,
    sep="",
)

conv_templates: dict[str, Conversation] = {
    "vicuna_v1": conv_vicuna_v1,
    "v1": conv_vicuna_v1,
    "llava_v1": conv_llava_v1,
    "plain": conv_llava_plain,
    "llava_llama_2": conv_llava_llama_2,
    "mistral_instruct": conv_mistral_instruct,
    "llama_3": conv_llama_3,
    "qwen_2": conv_qwen_2,
    "chat_template": conv_chat_template,
}
default_conversation = conv_vicuna_v1


def get_conv_template(name: str) -> Conversation:
    """A fresh copy of the template registered as `name`."""
    try:
        return conv_templates[name].copy()
    except KeyError:
        raise ValueError(f"unknown conversation template {name!r}; known: {sorted(conv_templates)}") from None
