"""Conversations from OpenAI-style messages, and the runner's independence from benchmarks."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from llava.inference import PromptError, conversation_from_messages, open_conversation, with_image_tokens


def _user(*parts):
    return {"role": "user", "content": list(parts)}


def test_images_go_in_front_of_the_text_as_in_llavas_runners():
    conv, images = conversation_from_messages(
        [_user({"type": "text", "text": "What is it?"}, {"type": "image_url", "image_url": {"url": "a.png"}})]
    )
    assert images == ["a.png"]
    assert (
        conv.get_prompt() == open_conversation("vicuna_v1", with_image_tokens("What is it?", 1)).get_prompt()
    )


def test_system_replaces_the_templates_and_history_is_kept():
    conv, images = conversation_from_messages(
        [
            {"role": "system", "content": "Be brief."},
            _user({"type": "image_url", "image_url": {"url": "a.png"}}, {"type": "text", "text": "q1"}),
            {"role": "assistant", "content": "a1"},
            {"role": "user", "content": "q2"},
        ]
    )
    assert images == ["a.png"]
    assert conv.get_prompt() == "Be brief. USER: <image>\nq1 ASSISTANT: a1</s>USER: q2 ASSISTANT:"


def test_placed_placeholders_must_match_the_images():
    conv, _ = conversation_from_messages(
        [
            _user(
                {"type": "text", "text": "Left <image> right"},
                {"type": "image_url", "image_url": {"url": "a"}},
            )
        ]
    )
    assert "USER: Left <image> right ASSISTANT:" in conv.get_prompt()
    with pytest.raises(PromptError, match=r"messages\[0\]: the query holds 1 <image>") as caught:
        conversation_from_messages([{"role": "user", "content": "a <image> b"}])
    assert caught.value.param == "messages[0].content"


@pytest.mark.parametrize(
    "messages, param",
    [
        ([], "messages"),
        ("hello", "messages"),
        ([{"role": "system", "content": "s"}], "messages"),
        ([{"role": "assistant", "content": "a"}], "messages[0].role"),
        ([{"role": "user", "content": "q"}, {"role": "user", "content": "q"}], "messages[1].role"),
        ([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "messages[1].role"),
        ([{"role": "user", "content": [{"type": "audio", "url": "x"}]}], "messages[0].content[0]"),
        ([{"role": "user", "content": []}], "messages[0].content"),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}], "messages[0].content[0]"),
        ([{"role": "user"}], "messages[0]"),
    ],
)
def test_bad_conversations_name_the_field(messages, param):
    with pytest.raises(PromptError) as caught:
        conversation_from_messages(messages)
    assert caught.value.param == param


def test_the_generic_runner_imports_no_benchmark_definition_or_scorer():
    code = (
        "import json, sys, llava.eval.runner; "
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('llava.eval'))))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(loaded) == [
        "llava.eval",
        "llava.eval.prompts",
        "llava.eval.run_record",
        "llava.eval.runner",
        "llava.eval.scoring_io",
    ]
