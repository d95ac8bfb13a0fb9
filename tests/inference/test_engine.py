"""The engine: completions, streaming, stop strings, context checks and dynamic batching."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer

from llava.inference import (
    ContextOverflowError,
    DecodingSettings,
    LoadedModel,
    open_conversation,
    with_image_tokens,
)
from llava.inference.decoding import cut_at_stop
from llava.inference.scheduler import BatchScheduler
from llava.inference.streaming import IncrementalDetokenizer, TextDeltas
from llava.mm_utils import load_image
from llava.tools.make_tiny_checkpoints import LLMS


def _prompt(engine, image_folder, i: int, question: str = "What is in the image?"):
    pixels = engine.encode_images([load_image(image_folder / f"img{i % 4}.png")])
    return engine.prompt_ids(
        open_conversation("vicuna_v1", with_image_tokens(f"{question} ({i})", 1))
    ), pixels


def test_completion_counts_and_finish_reasons(engine, image_folder):
    ids, pixels = _prompt(engine, image_folder, 0)
    (short,) = engine.complete([ids], [pixels], DecodingSettings(max_new_tokens=3))
    assert short.finish_reason == "length" and short.completion_tokens == 3
    assert short.prompt_tokens == len(ids) - 1 + engine.image_positions
    (longer,) = engine.complete([ids], [pixels], DecodingSettings(max_new_tokens=12))
    assert longer.text.startswith(short.text)


def test_stop_strings_end_the_answer_before_them(engine, image_folder):
    ids, pixels = _prompt(engine, image_folder, 1)
    full = engine.generate([ids], [pixels], DecodingSettings(max_new_tokens=12))[0]
    stop = next(full[i : i + 2] for i in range(1, len(full) - 2) if full.find(full[i : i + 2]) == i)
    (cut,) = engine.complete([ids], [pixels], DecodingSettings(max_new_tokens=12, stop=(stop,)))
    assert cut.finish_reason == "stop" and cut.text == full[: full.index(stop)].strip()
    assert "".join(engine.stream(ids, pixels, DecodingSettings(max_new_tokens=12, stop=(stop,)))) == cut.text


def test_streamed_pieces_add_up_to_the_answer(engine, image_folder):
    ids, pixels = _prompt(engine, image_folder, 2)
    settings = DecodingSettings(max_new_tokens=10)
    pieces = list(engine.stream(ids, pixels, settings))
    assert len(pieces) > 1 and "".join(pieces) == engine.generate([ids], [pixels], settings)[0]


def test_text_deltas_hold_back_whitespace_and_stop_prefixes():
    deltas = TextDeltas(stop=("STOP",))
    sent = [deltas.push(piece) for piece in (" ", "Hel", "lo ", "S", "T", "OP and", " more")]
    assert sent == ["", "Hel", "lo", "", "", "", ""]
    assert deltas.finish(cut_at_stop(" Hello STOP and", ("STOP",))[0].strip()) == ""
    # a trailing U+FFFD waits (a character may be unfinished); text after it settles it as text
    other = TextDeltas(stop=("ab",))
    assert [other.push(p) for p in ("x\ufffd", "\u00e9a", "c", " ", "d")] == [
        "x",
        "\ufffd\u00e9",
        "ac",
        "",
        " d",
    ]
    assert other.finish("x\ufffd\u00e9ac d") == ""


@pytest.mark.parametrize("llm", sorted(LLMS))
def test_incremental_detokenizing_adds_up_to_decoding_the_whole_answer(tiny_backbones, llm):
    """Each family's tokenizer, on text with spaces, punctuation and characters whose bytes span
    tokens: the pieces of one token each add up to decoding all the ids at once."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_backbones(llm, "clip")[0])
    text = "The red circle is at the top left. Café, naïve, 中文 and 🙂!  Two  spaces, 3+4=7."
    ids = tokenizer(text, add_special_tokens=False).input_ids
    decoder, streamed = IncrementalDetokenizer(tokenizer), ""
    for k, token in enumerate(ids):
        streamed += decoder.push(token)
        assert tokenizer.decode(ids[: k + 1], skip_special_tokens=True).startswith(streamed)
    assert streamed == tokenizer.decode(ids, skip_special_tokens=True)


def test_context_overflow_is_refused(engine, image_folder):
    ids, _ = _prompt(engine, image_folder, 0)
    assert engine.check_fits(ids, 10) == engine.prompt_length(ids)
    with pytest.raises(ContextOverflowError, match="over the model's context of 1024"):
        engine.check_fits(ids, engine.context_len)


def test_scheduler_batches_requests_that_arrive_together_with_their_alone_answers(engine, image_folder):
    settings = DecodingSettings(max_new_tokens=8)
    prompts = [_prompt(engine, image_folder, i) for i in range(6)]
    alone = [engine.generate([ids], [pixels], settings)[0] for ids, pixels in prompts]
    scheduler = BatchScheduler(engine, max_batch_size=16, max_wait_s=0.5)
    try:
        streamed: list[list[str]] = [[] for _ in prompts]
        futures = [
            scheduler.submit(ids, pixels, settings, streamed[i].append if i % 2 else None)
            for i, (ids, pixels) in enumerate(prompts)
        ]
        other = scheduler.submit(*prompts[0], DecodingSettings(max_new_tokens=4))
        answers = [future.result(timeout=60).text for future in futures]
        assert answers == alone
        assert ["".join(pieces) for pieces in streamed[1::2]] == alone[1::2]
        assert (
            other.result(timeout=60).text
            == engine.generate([prompts[0][0]], [prompts[0][1]], DecodingSettings(max_new_tokens=4))[0]
        )
        assert (
            list(scheduler.batch_sizes) == [6, 1] and scheduler.batches == 2
        )  # one call for the equal settings, one for the other
    finally:
        scheduler.close()
    with pytest.raises(RuntimeError, match="closed"):
        scheduler.submit(*prompts[0], settings)


def test_a_failing_batch_fails_its_requests_and_the_scheduler_goes_on(engine, image_folder):
    ids, pixels = _prompt(engine, image_folder, 0)
    scheduler = BatchScheduler(engine, max_wait_s=0.0)
    try:
        bad = scheduler.submit(
            ids, None, DecodingSettings(max_new_tokens=2)
        )  # a placeholder without its image
        with pytest.raises(ValueError, match="image"):
            bad.result(timeout=60)
        assert (
            scheduler.submit(ids, pixels, DecodingSettings(max_new_tokens=2)).result(timeout=60).text
            is not None
        )
    finally:
        scheduler.close()


def test_text_only_checkpoints_refuse_images(engine):
    from dataclasses import replace

    text_only = replace(engine, image_processor=None)
    with pytest.raises(ValueError, match="text-only checkpoint"):
        text_only.encode_images([Image.new("RGB", (4, 4))])


def test_a_plain_language_model_answers_without_echoing_its_prompt(tiny_checkpoints):
    """A text-only LLM folder loads as the library's causal LM, whose `generate` returns the prompt
    too; the engine keeps only the new tokens, alone or left-padded in a batch."""
    plain = LoadedModel.load(tiny_checkpoints[0], device="cpu")
    settings = DecodingSettings(max_new_tokens=5)
    prompts = [plain.prompt_ids(open_conversation("vicuna_v1", q)) for q in ("Hi?", "What is in it, then?")]
    ids = torch.tensor([prompts[0]])
    new = plain.model.generate(ids, attention_mask=torch.ones_like(ids), **settings.generate_kwargs())
    expected = plain.tokenizer.decode(new[0, ids.shape[1] :], skip_special_tokens=True).strip()
    assert plain.generate(prompts[:1], [None], settings) == [expected]
    assert plain.generate(prompts, [None, None], settings)[0] == expected
