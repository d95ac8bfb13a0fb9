"""Who may talk to the server: Host names (DNS rebinding), browser origins, and the API key."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from llava.serve import api
from llava.serve.guard import allowed_host_names, host_name
from tests.serve.serve_helpers import own_server

API_KEY = "sk-local-test-key"
APP_ORIGIN = "http://app.example"
HELLO = {"model": "tiny-fusion", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


def _post(url: str, headers: dict[str, str], body: dict = HELLO) -> httpx.Response:
    return httpx.post(url + "/v1/chat/completions", content=json.dumps(body), headers=headers, timeout=60)


def test_a_cross_origin_text_plain_post_is_refused(api_server):
    # What a page on another site can send without asking the server first (a "simple" request).
    response = _post(api_server.url, {"Content-Type": "text/plain", "Origin": "http://evil.example"})
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == "cross_origin_refused" and "http://evil.example" in error["message"]
    assert "access-control-allow-origin" not in response.headers
    for origin in ("null", "http://127.0.0.1:1"):
        assert (
            _post(api_server.url, {"Content-Type": "application/json", "Origin": origin}).status_code == 403
        )


def test_the_demo_page_s_own_origin_is_served(api_server):
    response = _post(api_server.url, {"Content-Type": "application/json", "Origin": api_server.url})
    assert response.status_code == 200, response.text


def test_a_foreign_host_header_is_refused(api_server):
    # DNS rebinding: the attacker's name resolves to 127.0.0.1, and the browser sends it as Host.
    response = _post(
        api_server.url, {"Content-Type": "application/json", "Host": f"rebound.example:{api_server.port}"}
    )
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_host"
    for host in (f"localhost:{api_server.port}", f"127.0.0.1:{api_server.port}"):
        assert httpx.get(api_server.url + "/v1/models", headers={"Host": host}).status_code == 200


@pytest.fixture(scope="module")
def keyed_server(tiny_model_path, tmp_path_factory, monkeypatch_module):
    monkeypatch_module.setenv("LLAVA_API_KEY", API_KEY)  # the server reads the key from its environment
    log = tmp_path_factory.mktemp("keyed") / "server.log"
    with own_server(tiny_model_path, log, "--allowed-origins", APP_ORIGIN) as running:
        yield running


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_the_api_key_is_checked_as_openai_s_bearer_header(keyed_server):
    client = openai.OpenAI(base_url=keyed_server.url + "/v1", api_key=API_KEY, max_retries=0, timeout=60)
    reply = client.chat.completions.create(model="tiny-fusion", messages=HELLO["messages"], max_tokens=2)
    assert reply.choices[0].finish_reason in ("stop", "length")
    wrong = openai.OpenAI(base_url=keyed_server.url + "/v1", api_key="sk-wrong", max_retries=0, timeout=60)
    with pytest.raises(openai.AuthenticationError) as caught:
        wrong.models.list()
    assert caught.value.status_code == 401 and caught.value.body["code"] == "invalid_api_key"
    bare = _post(keyed_server.url, {"Content-Type": "application/json"})
    assert bare.status_code == 401 and bare.headers["www-authenticate"] == "Bearer"
    assert httpx.get(keyed_server.url + "/health").status_code == 200  # open, for probes
    assert "const apiKeyRequired = true;" in httpx.get(keyed_server.url + "/").text


def test_an_allowed_origin_gets_cors_answers_and_others_are_refused(keyed_server):
    preflight = httpx.options(
        keyed_server.url + "/v1/chat/completions",
        headers={
            "Origin": APP_ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == APP_ORIGIN
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"}
    allowed = _post(keyed_server.url, {**headers, "Origin": APP_ORIGIN})
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == APP_ORIGIN
    assert _post(keyed_server.url, {**headers, "Origin": "http://evil.example"}).status_code == 403


def test_allowed_hosts_follow_the_bound_address():
    assert allowed_host_names("127.0.0.1", []) == {"127.0.0.1", "localhost", "::1"}
    assert allowed_host_names("10.1.2.3", ["llava.lan"]) == {"10.1.2.3", "llava.lan"}
    assert allowed_host_names("0.0.0.0", ["*"]) is None
    with pytest.raises(ValueError, match="--allowed-hosts"):
        allowed_host_names("0.0.0.0", [])
    assert [host_name(h) for h in ("[::1]:8000", "LocalHost:80", "example.org.", "")] == [
        "::1",
        "localhost",
        "example.org",
        "",
    ]


def test_flags_are_parsed_at_the_edge(monkeypatch):
    monkeypatch.setenv("LLAVA_API_KEY", "from-env")
    args = api.build_parser().parse_args(
        ["--model-path", "m", "--allowed-origins", "https://a.example, https://b.example"]
    )
    assert args.api_key == "from-env" and args.allowed_origins == ["https://a.example", "https://b.example"]
    assert api.build_parser().parse_args(["--model-path", "m", "--api-key", "k"]).api_key == "k"
