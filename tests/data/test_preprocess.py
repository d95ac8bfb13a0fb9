"""Masking per template, the masking check on broken samples, and the length check."""

from __future__ import annotations

import pytest

from llava.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from llava.data.preprocess import check_masking, supervised_spans, tokenize_sample
from llava.data.records import BadSampleError, build_conversation, structural_problem
from llava.data.toy import image_record
from llava.mm_utils import tokenize_conversation

# What each template supervises after every reply: the reply's text plus its end.
EXPECTED_END = {"v1": "</s>", "llava_v1": "</s>", "llava_llama_2": " </s>", "mistral_instruct": " </s>"}


@pytest.mark.parametrize("template", sorted(EXPECTED_END))
def test_supervised_tokens_are_exactly_the_replies_with_their_end(template, tokenizer):
    record = image_record(0, "red", "0.png", turns=3)
    conv = build_conversation(record, template)
    input_ids, labels = tokenize_sample(conv, tokenizer, max_length=512, num_image_tokens=16)
    replies = [turn["value"] for turn in record["conversations"][1::2]]
    spans = supervised_spans(labels)
    assert len(spans) == len(replies) == 3
    for (start, stop), reply in zip(spans, replies, strict=True):
        assert labels[start:stop] == input_ids[start:stop]
        text = tokenizer.decode(input_ids[start:stop], skip_special_tokens=False)
        assert text.strip() == (reply + EXPECTED_END[template]).strip()
        assert input_ids[stop - 1] == tokenizer.eos_token_id
    supervised = {i for start, stop in spans for i in range(start, stop)}
    assert all(labels[i] == IGNORE_INDEX for i in range(len(labels)) if i not in supervised)
    assert (
        input_ids.count(IMAGE_TOKEN_INDEX) == 1 and labels[input_ids.index(IMAGE_TOKEN_INDEX)] == IGNORE_INDEX
    )


def test_plain_template_supervises_the_caption_only(tokenizer):
    record = image_record(0, "blue", "0.png")
    conv = build_conversation(record, "plain")
    input_ids, labels = tokenize_sample(conv, tokenizer, max_length=512, num_image_tokens=16)
    assert input_ids[:2] == [tokenizer.bos_token_id, IMAGE_TOKEN_INDEX]  # the prompt is the image alone
    ((start, stop),) = supervised_spans(labels)
    assert tokenizer.decode(input_ids[start:stop]) == "A blue square.\n"
    assert stop == len(input_ids)


def test_image_moves_to_the_front_of_its_turn(tokenizer):
    conv = build_conversation(image_record(0, "red", "0.png"), "v1")
    assert conv.messages[0][1] == "<image>\nWhat is in the image?"


def test_misaligned_labels_raise(tokenizer):
    conv = build_conversation(image_record(0, "red", "0.png", turns=2), "v1")
    input_ids, labels = tokenize_conversation(conv, tokenizer)
    shifted = [IGNORE_INDEX, *labels[:-1]]  # labels one position late
    with pytest.raises(BadSampleError, match="does not end with|labels differ"):
        check_masking(conv, input_ids, shifted, tokenizer)
    merged = [label if label != IGNORE_INDEX else input_ids[i] for i, label in enumerate(labels)]
    merged[:3] = [IGNORE_INDEX] * 3  # user turns supervised: one span instead of two
    with pytest.raises(BadSampleError, match="2 assistant"):
        check_masking(conv, input_ids, merged, tokenizer)


def test_an_image_inside_a_reply_raises(tokenizer):
    record = image_record(0, "red", "0.png")
    record["conversations"][0]["value"] = "What is in the image?"
    record["conversations"][1]["value"] = "It is <image> here."
    assert structural_problem(record) is None  # counts agree: only the masking check catches it
    with pytest.raises(BadSampleError, match="inside an assistant reply"):
        tokenize_sample(build_conversation(record, "v1"), tokenizer, max_length=512, num_image_tokens=16)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r["conversations"].reverse(), "expected 'human'"),
        (lambda r: r["conversations"].pop(), "ends with a human turn"),
        (lambda r: r.pop("image"), "placeholder"),
        (lambda r: r.__setitem__("image", []), "non-empty list"),
        (lambda r: r.pop("conversations"), "'conversations'"),
    ],
)
def test_malformed_records_are_named(mutate, message):
    record = image_record(0, "red", "0.png")
    mutate(record)
    assert message in structural_problem(record)


def test_an_over_length_sample_is_bad_never_truncated(tokenizer):
    conv = build_conversation(image_record(0, "red", "0.png"), "v1")
    input_ids, _ = tokenize_sample(conv, tokenizer, max_length=None, num_image_tokens=16)
    length = len(input_ids) + 15  # the placeholder stands for 16 positions
    assert tokenize_sample(conv, tokenizer, max_length=length, num_image_tokens=16)[0] == input_ids
    with pytest.raises(BadSampleError, match=f"{length} positions .* > model_max_length {length - 1}") as err:
        tokenize_sample(conv, tokenizer, max_length=length - 1, num_image_tokens=16)
    assert err.value.kind == "too_long"
