"""Continuous batching: requests join the running batch at the next step and leave it when they
end, each with the answer it gets alone.

What is exact and what is not: a row in the batch computes what it computes alone, but the batch's
shape changes the order in which floats are added (a kernel's blocking over more rows, masked
padding columns in the softmax), so its logits equal its alone logits only to float32 rounding.
`test_rows_that_join_and_leave_keep_their_alone_logits` bounds that difference at every step
(`tolerances.model_forward`). Greedy token ids are then identical wherever the two best logits of a
step are further apart than twice that bound, which holds on these prompts: the end-to-end tests
compare the answers (token counts and texts) exactly, with no tolerance.
"""

from __future__ import annotations

import threading

import pytest
import torch
from transformers import GenerationConfig

from llava.inference import DecodingSettings, LoadedModel, open_conversation, with_image_tokens
from llava.inference.continuous import ContinuousScheduler
from llava.inference.decode_batch import TRIM, DecodeBatch
from llava.inference.rows import UnsupportedGenerationConfigError, check_generation_config
from llava.inference.scheduler import GenerationCancelled
from llava.mm_utils import load_image
from tests import tolerances

ANSWER_LENGTHS = (40, 3, 7, 12, 25, 5, 18, 30)


def _request(engine, image_folder, i: int, max_new_tokens: int, **settings):
    """Request `i`: an image question for even `i`, text only for odd; prompts of varied lengths."""
    question = f"Tell me about thing {i}" + " please" * i
    if i % 2 == 0:
        ids = engine.prompt_ids(open_conversation("vicuna_v1", with_image_tokens(question, 1)))
        pixels = engine.encode_images([load_image(image_folder / f"img{i % 4}.png")])
    else:
        ids, pixels = engine.prompt_ids(open_conversation("vicuna_v1", question)), None
    return ids, pixels, DecodingSettings(max_new_tokens=max_new_tokens, **settings)


def _alone(engine, request):
    ids, pixels, settings = request
    return engine.complete([ids], [pixels], settings)[0]


def _alone_scores(engine, request) -> tuple[list[int], torch.Tensor]:
    """The greedy tokens `generate` picks alone and the logits it picks them from, `[n, V]`."""
    ids, pixels, settings = request
    prompt = torch.tensor([ids])
    out = engine.model.generate(
        prompt,
        images=pixels,
        attention_mask=torch.ones_like(prompt),
        pad_token_id=engine.tokenizer.pad_token_id,
        output_scores=True,
        return_dict_in_generate=True,
        **settings.generate_kwargs(),
    )
    return out.sequences[0].tolist(), torch.cat(out.scores)


def test_rows_that_join_and_leave_keep_their_alone_logits(engine, image_folder):
    """The batch driven by hand, each row fed its alone greedy tokens: rows join at steps 0, 2, 5
    and 9 (two of them prefilled together, one into the slot another left), leave when their
    tokens run out, and at every step each row's logits are its alone logits up to float32
    summation order."""
    lengths = (14, 4, 9, 6, 5)
    requests = [_request(engine, image_folder, i, n) for i, n in enumerate(lengths)]
    alone = [_alone_scores(engine, request) for request in requests]
    admitted_before_step = {0: [0], 2: [1, 2], 5: [3], 9: [4]}
    longest = max(engine.prompt_length(ids) + n for (ids, _, _), n in zip(requests, lengths, strict=True))
    batch, checked, rebuilt = DecodeBatch(engine.model), [], set()

    def check(request: int, position: int, logits: torch.Tensor) -> None:
        reference = alone[request][1][position]
        bound = tolerances.model_forward(reference, engine.model.config, tokens=longest)
        difference = (logits - reference).abs().max().item()
        assert difference <= bound, (request, position, difference, bound)
        checked.append((request, position))

    for step in range(max(lengths) + max(admitted_before_step)):
        newcomers = admitted_before_step.get(step, [])
        if newcomers:
            prefilled = batch.prefill(
                [requests[i][0] for i in newcomers], [requests[i][1] for i in newcomers]
            )
            for k, i in enumerate(newcomers):
                check(i, 0, prefilled.logits[k])
            layers = batch.cache.layers[0] if batch.cache is not None else None
            batch.join(prefilled, [[i, 0] for i in newcomers], [alone[i][0][0] for i in newcomers])
            rebuilt.add(batch.cache.layers[0] is not layers)
        if not batch:
            continue
        logits = batch.step()
        for slot, row in batch.live():
            row[1] += 1
            check(row[0], row[1], logits[slot])
            batch.tokens[slot] = alone[row[0]][0][row[1]]
        batch.leave([slot for slot, (i, position) in batch.live() if position + 1 == lengths[i]])
        if batch:  # the rows hold their own positions, and the cache is not much longer than the longest
            positions = {slot: engine.prompt_length(requests[i][0]) + p for slot, (i, p) in batch.live()}
            assert {slot: int(batch.mask[slot].sum()) for slot in positions} == positions
            assert batch.columns - max(positions.values()) < TRIM
    assert not batch and sorted(checked) == [(i, p) for i, n in enumerate(lengths) for p in range(n)]
    assert rebuilt == {True, False}  # newcomers both rebuilt the cache and took free slots


def test_requests_join_the_running_batch_and_leave_it_with_their_alone_answers(engine, image_folder):
    requests = [_request(engine, image_folder, i, n) for i, n in enumerate(ANSWER_LENGTHS)]
    alone = [_alone(engine, request) for request in requests]
    scheduler = ContinuousScheduler(engine, max_wait_s=0.0)
    try:
        started, streamed = threading.Event(), [[] for _ in requests]

        def streaming(i):
            return lambda text: (streamed[i].append(text), started.set())

        futures = [scheduler.submit(*requests[0], streaming(0))]
        assert started.wait(timeout=60)  # the long request is running: the next ones join it
        futures += [scheduler.submit(*requests[i], streaming(i) if i % 3 else None) for i in range(1, 5)]
        futures[1].result(timeout=60)  # a short one has left: the last ones join a thinner batch
        futures += [scheduler.submit(*requests[i], streaming(i) if i % 3 else None) for i in range(5, 8)]
        assert [future.result(timeout=120) for future in futures] == alone
    finally:
        scheduler.close()
    assert all("".join(streamed[i]) == alone[i].text for i in range(8) if i % 3)
    sizes = list(scheduler.batch_sizes)
    assert sizes[0] == 1 and max(sizes) > 1 and sizes[-1] == 1  # joined, then left one by one
    assert scheduler.batches >= 3 and scheduler.steps == len(sizes) and scheduler.cancelled == 0
    assert len({completion.text for completion in alone}) > 1


def test_a_short_request_does_not_wait_for_a_long_one(engine, image_folder):
    long, short = _request(engine, image_folder, 0, 900), _request(engine, image_folder, 1, 4)
    alone = _alone(engine, short)
    scheduler = ContinuousScheduler(engine, max_wait_s=0.0)
    try:
        started, stop_long = threading.Event(), threading.Event()
        running = scheduler.submit(*long, lambda _: started.set(), cancelled=stop_long)
        assert started.wait(timeout=60)
        assert scheduler.submit(*short).result(timeout=60) == alone
        assert not running.done()  # joined at the next step, answered 4 steps later: long before 900
        stop_long.set()
        with pytest.raises(GenerationCancelled):
            running.result(timeout=60)
    finally:
        scheduler.close()


def test_requests_with_other_settings_share_the_batch(engine, image_folder):
    """Greedy rows with stop strings, sampled rows and a beam-search request (answered by its own
    `generate` call) together; the greedy ones and the beam search get their alone answers."""
    full = _alone(engine, _request(engine, image_folder, 3, 12))
    stop = full.text.split()[1][:3]
    greedy = [_request(engine, image_folder, 3, 12, stop=(stop,)), _request(engine, image_folder, 4, 9)]
    sampled = _request(engine, image_folder, 5, 10, temperature=0.8, top_p=0.9)
    beams = _request(engine, image_folder, 6, 6, num_beams=2)
    alone = [_alone(engine, request) for request in (*greedy, beams)]
    assert alone[0].finish_reason == "stop" and alone[0].text == full.text[: full.text.index(stop)].strip()
    scheduler = ContinuousScheduler(engine, max_wait_s=0.5)
    try:
        futures = [scheduler.submit(*request) for request in (*greedy, sampled, beams)]
        completions = [future.result(timeout=120) for future in futures]
    finally:
        scheduler.close()
    assert [completions[0], completions[1], completions[3]] == alone
    assert 1 <= completions[2].completion_tokens <= 10
    assert scheduler.batch_sizes[0] == 3  # the greedy, stopped and sampled rows in one step


def test_a_cancelled_row_leaves_while_the_others_go_on_and_close_cancels_everything(engine, image_folder):
    requests = [_request(engine, image_folder, i, n) for i, n in enumerate((900, 16, 900))]
    alone = _alone(engine, requests[1])
    scheduler = ContinuousScheduler(engine, max_wait_s=0.0)
    try:
        left, started = threading.Event(), threading.Event()
        dropped = scheduler.submit(*requests[0], lambda _: left.set(), cancelled=left)  # leaves at once
        assert scheduler.submit(*requests[1]).result(timeout=60) == alone
        with pytest.raises(GenerationCancelled):
            dropped.result(timeout=60)
        running = scheduler.submit(*requests[2], lambda _: started.set())
        assert started.wait(timeout=60)
        queued = scheduler.submit(*requests[1])
        scheduler.close(cancel=True, timeout_s=60)
        assert not scheduler._thread.is_alive()  # not the rest of 900 tokens
        for future in (running, queued):
            with pytest.raises(GenerationCancelled):
                future.result(timeout=1)
    finally:
        scheduler.close()
    assert scheduler.cancelled == 3
    with pytest.raises(RuntimeError, match="closed"):
        scheduler.submit(*requests[1])


def test_a_bad_request_fails_alone_and_its_batch_mates_get_their_answers(engine, image_folder):
    good = [_request(engine, image_folder, i, 8) for i in (1, 2)]
    alone = [_alone(engine, request) for request in good]
    bad = (good[1][0], None, good[1][2])  # an image placeholder without its image
    scheduler = ContinuousScheduler(engine, max_wait_s=0.5)
    try:
        streamed: list[str] = []
        futures = [
            scheduler.submit(*good[0], streamed.append),
            scheduler.submit(*bad),
            scheduler.submit(*good[1]),
        ]
        with pytest.raises(ValueError, match="image"):
            futures[1].result(timeout=120)
        assert [futures[0].result(timeout=120), futures[2].result(timeout=120)] == alone
        assert "".join(streamed) == alone[0].text
        assert scheduler.batches == 2 and scheduler.batch_sizes[0] == 2  # each good one prefilled alone
    finally:
        scheduler.close()


@pytest.mark.parametrize("llm", ["llama", "mistral", "qwen3"])
def test_plain_language_models_of_each_family(tiny_backbones, llm):
    """A text-only LLM (the library's causal LM): Mistral's sliding window (24 positions, shorter
    than these prompts) and Qwen3's q/k norm over a cache whose rows are padded on the left."""
    plain = LoadedModel.load(tiny_backbones(llm, "clip")[0], device="cpu")
    requests = [
        (
            plain.prompt_ids(open_conversation("vicuna_v1", "Hi" + " there" * i)),
            None,
            DecodingSettings(max_new_tokens=n),
        )
        for i, n in enumerate((30, 6, 12))
    ]
    alone = [_alone(plain, request) for request in requests]
    scheduler = ContinuousScheduler(plain, max_wait_s=0.0)
    try:
        started = threading.Event()
        first = scheduler.submit(*requests[0], lambda _: started.set())
        assert started.wait(timeout=60)
        futures = [first, *(scheduler.submit(*request) for request in requests[1:])]
        assert [future.result(timeout=120) for future in futures] == alone
    finally:
        scheduler.close()
    assert max(scheduler.batch_sizes) > 1


def test_generation_configs_it_cannot_follow_are_refused(engine):
    class Checkpoint:
        generation_config = GenerationConfig(repetition_penalty=1.2, top_k=20)

    with pytest.raises(UnsupportedGenerationConfigError, match="repetition_penalty.*--scheduler request"):
        check_generation_config(Checkpoint())
    check_generation_config(engine.model)  # the tiny checkpoint's own: nothing to refuse
