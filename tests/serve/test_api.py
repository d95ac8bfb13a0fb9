"""The OpenAI-compatible server, driven by the official `openai` client on 127.0.0.1."""

from __future__ import annotations

import base64
import io
import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from PIL import Image

from llava.eval import run_llava
from llava.serve import api
from tests.serve.serve_helpers import MAX_BODY_BYTES, MAX_IMAGES

QUESTION = "What is in the image?"


def data_url(path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def image_message(url: str, text: str = QUESTION) -> list[dict]:
    return [
        {
            "role": "user",
            "content": [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": url}}],
        }
    ]


@pytest.fixture(scope="module")
def client(api_server) -> openai.OpenAI:
    return openai.OpenAI(base_url=api_server.api, api_key="unused", max_retries=0, timeout=120)


def ask(client, server, messages, **params) -> openai.types.chat.ChatCompletion:
    return client.chat.completions.create(model=server.model_id, messages=messages, **params)


def test_models_and_health(client, api_server):
    models = client.models.list()
    assert [m.id for m in models.data] == ["tiny-fusion"] and models.data[0].object == "model"
    assert client.models.retrieve("tiny-fusion").id == "tiny-fusion"
    health = httpx.get(api_server.url + "/health").json()
    assert health["status"] == "ok" and health["model"] == "tiny-fusion"


def test_plain_and_streamed_answers_with_an_image_equal_run_llava(
    client, api_server, tiny_model_path, image_folder, capsys
):
    messages = image_message(data_url(image_folder / "img0.png"))
    plain = ask(client, api_server, messages, max_tokens=8, temperature=0)
    answer = plain.choices[0].message.content
    assert plain.object == "chat.completion" and plain.model == "tiny-fusion" and answer
    assert (
        plain.choices[0].finish_reason in ("stop", "length") and plain.choices[0].message.role == "assistant"
    )
    usage = plain.usage
    assert (
        usage.completion_tokens <= 8 and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    )
    assert usage.prompt_tokens > 16  # the image's 16 positions are counted

    chunks = list(
        ask(
            client,
            api_server,
            messages,
            max_tokens=8,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == answer
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == [plain.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == usage.total_tokens

    # The same question through the one-shot CLI: one engine behind both.
    cli_answer = run_llava.main(
        [
            "--model-path",
            tiny_model_path,
            "--image-file",
            str(image_folder / "img0.png"),
            "--query",
            QUESTION,
            "--max_new_tokens",
            "8",
            "--temperature",
            "0",
        ]
    )
    assert cli_answer == answer
    # A local path under the allowed folder reads the same image.
    by_path = ask(
        client, api_server, image_message(str(image_folder / "img0.png")), max_tokens=8, temperature=0
    )
    assert by_path.choices[0].message.content == answer


def stop_inside(text: str) -> str:
    """Two characters first occurring after the start of `text` (a stop string that cuts it)."""
    for i in range(1, len(text) - 2):
        if text.find(text[i : i + 2]) == i and text[i] != " ":
            return text[i : i + 2]
    raise AssertionError(f"no stop string cuts {text!r}")


def test_stop_strings_cut_the_answer(client, api_server, image_folder):
    messages = image_message(data_url(image_folder / "img1.png"))
    full = ask(client, api_server, messages, max_tokens=12, temperature=0).choices[0].message.content
    stop = stop_inside(full)
    cut = ask(client, api_server, messages, max_tokens=12, temperature=0, stop=[stop]).choices[0]
    assert cut.finish_reason == "stop" and cut.message.content == full[: full.index(stop)].strip()
    streamed = ask(client, api_server, messages, max_tokens=12, temperature=0, stop=stop, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == cut.message.content


def test_sampling_options_are_accepted(client, api_server, image_folder):
    messages = image_message(data_url(image_folder / "img2.png"))
    sampled = ask(client, api_server, messages, max_tokens=6, temperature=0.8, top_p=0.9)
    assert sampled.usage.completion_tokens <= 6
    beams = ask(client, api_server, messages, max_tokens=6, extra_body={"num_beams": 2})
    assert beams.choices[0].finish_reason in ("stop", "length")


def test_sixteen_concurrent_clients_get_their_one_at_a_time_answers(client, api_server, image_folder):
    requests = [
        image_message(data_url(image_folder / f"img{i % 4}.png"), f"Question {i}: what colour is it?")
        for i in range(16)
    ]
    alone = [
        ask(client, api_server, m, max_tokens=10, temperature=0).choices[0].message.content for m in requests
    ]
    batches_before = httpx.get(api_server.url + "/health").json()["batches"]
    with ThreadPoolExecutor(16) as pool:
        together = list(
            pool.map(lambda m: ask(client, api_server, m, max_tokens=10, temperature=0), requests)
        )
    assert [c.choices[0].message.content for c in together] == alone
    batches = httpx.get(api_server.url + "/health").json()["batches"] - batches_before
    assert batches < 16, "the concurrent requests were not batched"
    assert len(set(alone)) > 1  # the prompts differ, and so do the answers


def _not_an_image() -> str:
    return "data:image/png;base64," + base64.b64encode(b"these bytes are no image").decode("ascii")


def _png_url(size: int = 8) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), "white").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


BAD_BODIES = {
    "no messages": ({"model": "tiny-fusion"}, 400, "messages"),
    "empty messages": ({"model": "tiny-fusion", "messages": []}, 400, "messages"),
    "no content": ({"model": "tiny-fusion", "messages": [{"role": "user"}]}, 400, "messages[0]"),
    "assistant first": (
        {"model": "tiny-fusion", "messages": [{"role": "assistant", "content": "hi"}]},
        400,
        "messages[0].role",
    ),
    "bad base64": (
        {"model": "tiny-fusion", "messages": image_message("data:image/png;base64,@@not base64@@")},
        400,
        "messages[0].content[1]",
    ),
    "not an image": (
        {"model": "tiny-fusion", "messages": image_message(_not_an_image())},
        400,
        "messages[0].content[1]",
    ),
    "too many images": (
        {
            "model": "tiny-fusion",
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": _png_url()}}] * (MAX_IMAGES + 1)
                    + [{"type": "text", "text": "q"}],
                }
            ],
        },
        400,
        "messages",
    ),
    "prompt over the context": (
        {"model": "tiny-fusion", "messages": [{"role": "user", "content": "red green blue " * 600}]},
        400,
        "messages",
    ),
    "answer budget over the context": (
        {"model": "tiny-fusion", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1020},
        400,
        "messages",
    ),
    "path outside the image folder": (
        {"model": "tiny-fusion", "messages": image_message("/etc/hostname")},
        400,
        "messages[0].content[1]",
    ),
    "remote image": (
        {"model": "tiny-fusion", "messages": image_message("http://127.0.0.1:9/cat.png")},
        400,
        "messages[0].content[1]",
    ),
    "temperature": (
        {"model": "tiny-fusion", "messages": [{"role": "user", "content": "hi"}], "temperature": 5},
        400,
        "temperature",
    ),
    "top_p": (
        {"model": "tiny-fusion", "messages": [{"role": "user", "content": "hi"}], "top_p": 0},
        400,
        "top_p",
    ),
    "max_tokens": (
        {"model": "tiny-fusion", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0},
        400,
        "max_tokens",
    ),
    "n": ({"model": "tiny-fusion", "messages": [{"role": "user", "content": "hi"}], "n": 2}, 400, "n"),
    "stop": (
        {
            "model": "tiny-fusion",
            "messages": [{"role": "user", "content": "hi"}],
            "stop": ["a", "b", "c", "d", "e"],
        },
        400,
        "stop",
    ),
    "unknown parameter": (
        {"model": "tiny-fusion", "messages": [{"role": "user", "content": "hi"}], "tools": []},
        400,
        "tools",
    ),
    "beams streamed": (
        {
            "model": "tiny-fusion",
            "messages": [{"role": "user", "content": "hi"}],
            "num_beams": 2,
            "stream": True,
        },
        400,
        "num_beams",
    ),
    "another model": ({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}, 404, "model"),
    "<image> in a system message": (
        {
            "model": "tiny-fusion",
            "messages": [{"role": "system", "content": "<image>"}, {"role": "user", "content": "hi"}],
        },
        400,
        "messages[0].content",
    ),
    "<image> in an assistant message": (
        {
            "model": "tiny-fusion",
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": [{"type": "text", "text": "see <image>"}]},
                {"role": "user", "content": "and?"},
            ],
        },
        400,
        "messages[1].content",
    ),
    "a stop string no token can end": (
        {"model": "tiny-fusion", "messages": [{"role": "user", "content": "hi"}], "stop": "\u0000"},
        400,
        "stop",
    ),
}


@pytest.fixture(scope="module")
def good_answer(client, api_server, image_folder):
    messages = image_message(data_url(image_folder / "img3.png"))
    return messages, ask(client, api_server, messages, max_tokens=8, temperature=0).choices[0].message.content


@pytest.mark.parametrize("case", sorted(BAD_BODIES))
def test_malformed_request_gets_a_4xx_and_the_server_goes_on(case, client, api_server, good_answer):
    body, status, param = BAD_BODIES[case]
    with pytest.raises(openai.APIStatusError) as caught:
        client.post("/chat/completions", cast_to=object, body=body)
    assert caught.value.status_code == status
    error = caught.value.body
    assert set(error) == {"message", "type", "param", "code"} and error["message"], error
    assert error["param"] == param
    messages, expected = good_answer
    assert (
        ask(client, api_server, messages, max_tokens=8, temperature=0).choices[0].message.content == expected
    )


HI = b'"messages": [{"role": "user", "content": "hi"}]'


@pytest.mark.parametrize(
    "content, status",
    [
        (b"{not json", 400),
        (b"[1, 2]", 400),
        (b'{"model": "tiny-fusion", "pad": "' + b"x" * MAX_BODY_BYTES + b'"}', 413),
        (b'{"model": "tiny-fusion", "messages": [{"role": "user", "content": "hi \\ud800"}]}', 400),
        (b'{"model": "tiny-fusion", ' + HI + b', "stop": ["\\udfff"]}', 400),
        (b'{"model": "tiny-fusion", ' + HI + b', "\\ud800": 1}', 400),
        (b'{"model": "tiny-fusion", "messages": ' + b"[" * 99_000 + b"]" * 99_000 + b"}", 400),
        (b'{"model": "tiny-fusion", "messages": ' + b"[" * 500 + b"]" * 500 + b"}", 400),
        (b'{"model": "tiny-fusion", ' + HI + b', "max_tokens": ' + b"9" * 5000 + b"}", 400),
        (b'{"model": "tiny-fusion", ' + HI + b', "temperature": ' + b"9" * 5000 + b".5}", 400),
        (b'{"model": "tiny-fusion", ' + HI + b', "temperature": NaN}', 400),
        (b'{"model": "tiny-fusion", ' + HI + b', "max_tokens": 1e999}', 400),
    ],
    ids=[
        "not JSON",
        "not an object",
        "body over the limit",
        "lone surrogate in the text",
        "lone surrogate in a stop string",
        "lone surrogate in a key",
        "nested 99000 deep",
        "nested 500 deep",
        "a 5000-digit integer",
        "a 5000-digit float",
        "NaN",
        "infinity",
    ],
)
def test_unreadable_bodies_get_a_4xx_and_the_server_goes_on(content, status, client, api_server, good_answer):
    response = httpx.post(
        api_server.api + "/chat/completions",
        content=content,
        headers={"Content-Type": "application/json"},
        timeout=60,
    )
    assert response.status_code == status
    assert response.json()["error"]["message"]
    messages, expected = good_answer
    assert (
        ask(client, api_server, messages, max_tokens=8, temperature=0).choices[0].message.content == expected
    )


def test_a_client_leaving_a_stream_early_leaves_the_server_serving(client, api_server, good_answer):
    messages, expected = good_answer
    with httpx.stream(
        "POST",
        api_server.api + "/chat/completions",
        json={"model": api_server.model_id, "messages": messages, "max_tokens": 8, "stream": True},
        timeout=60,
    ) as response:
        first = next(response.iter_lines())
    assert first.startswith("data: ") and json.loads(first[6:])["object"] == "chat.completion.chunk"
    assert (
        ask(client, api_server, messages, max_tokens=8, temperature=0).choices[0].message.content == expected
    )


def test_the_server_binds_to_this_machine_only_by_default():
    assert api.build_parser().parse_args(["--model-path", "m"]).host == "127.0.0.1"


def test_unknown_route_is_an_openai_error(api_server):
    response = httpx.get(api_server.api + "/completions-of-another-kind")
    assert response.status_code == 404 and json.loads(response.text)["error"]["type"] == "not_found_error"
