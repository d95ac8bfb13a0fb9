"""LLaVA-Bench judge: review prompt, score parsing, summary, the HTTP client, appending and
resuming reviews, and the absence of a default endpoint, against a local server on 127.0.0.1
(no external network)."""

import http.server
import json
import threading

import pytest

from llava.eval import judge
from llava.eval.scoring_io import CoverageError


@pytest.fixture
def bench_files(tmp_path, write_jsonl):
    write_jsonl(tmp_path / "questions.jsonl", [
        {"question_id": 0, "image": "001.jpg", "text": "What is this?", "category": "conv"},
        {"question_id": 1, "image": "001.jpg", "text": "Describe it.", "category": "detail"},
    ])  # fmt: skip
    write_jsonl(
        tmp_path / "context.jsonl", [{"id": "x", "image": "001.jpg", "caption": ["A red bus.", "On a road."]}]
    )
    write_jsonl(tmp_path / "gpt4.jsonl", [
        {"question_id": 1, "text": "A red bus on a road.", "answer_id": "g1"},
        {"question_id": 0, "text": "A bus.", "answer_id": "g0"},
    ])  # fmt: skip
    write_jsonl(tmp_path / "model.jsonl", [
        {"question_id": 0, "text": "A vehicle.", "answer_id": "m0"},
        {"question_id": 1, "text": "Red bus.", "answer_id": "m1"},
    ])  # fmt: skip
    return tmp_path


def _requests(d, rules=None):
    return judge.build_requests(
        judge.read_jsonl(d / "questions.jsonl"),
        judge.read_jsonl(d / "context.jsonl"),
        judge.read_jsonl(d / "gpt4.jsonl"),
        judge.read_jsonl(d / "model.jsonl"),
        rules or judge.DEFAULT_RULES,
    )


def test_review_prompt(bench_files):
    rule = judge.Rule("Assistant", "RATE THEM")
    reqs = _requests(bench_files, {"llava_bench_conv": rule, "llava_bench_detail": rule})
    assert [(r.question_id, r.category, r.answer1_id, r.answer2_id) for r in reqs] == [
        (0, "llava_bench_conv", "g0", "m0"),
        (1, "llava_bench_detail", "g1", "m1"),
    ]
    assert reqs[0].content == (
        "[Context]\nA red bus.\nOn a road.\n\n[Question]\nWhat is this?\n\n"
        "[Assistant 1]\nA bus.\n\n[End of Assistant 1]\n\n"
        "[Assistant 2]\nA vehicle.\n\n[End of Assistant 2]\n\n[System]\nRATE THEM\n\n"
    )


def test_rule_file_and_missing_rule(bench_files, write_json):
    path = write_json(bench_files / "rule.json", {"llava_bench_conv": {"role": "Assistant", "prompt": "P"}})
    with pytest.raises(ValueError, match="no judge rule for category 'llava_bench_detail'"):
        _requests(bench_files, judge.load_rules(path))


@pytest.mark.parametrize(
    ("review", "scores"),
    [
        ("8 7\nBecause...", (8.0, 7.0)),
        ("8, 7", (8.0, 7.0)),
        ("8.5 9\n", (8.5, 9.0)),
        ("Scores: 8 7", None),
        ("eight seven", None),
        ("", None),
    ],
)
def test_parse_scores(review, scores):
    assert judge.parse_scores(review) == scores


def test_summarize():
    reviews = [
        {"category": "llava_bench_conv", "tuple": [8, 6]},
        {"category": "llava_bench_conv", "tuple": [6, 6]},
        {"category": "llava_bench_detail", "tuple": [10, 5]},
        {"category": "llava_bench_detail", "tuple": [-1, -1]},  # unparsed: left out
    ]
    s = judge.summarize(reviews)
    # conv: 6 / 7 = 85.7; detail: 5 / 10 = 50.0; all: means 8 and 5.667 (rounded) -> 70.8
    assert (s["conv"].relative, s["conv"].reference, s["conv"].model) == (85.7, 70.0, 60.0)
    assert s["detail"].relative == 50.0 and s["detail"].count == 1
    assert (s["all"].relative, s["all"].reference, s["all"].model, s["all"].count) == (70.8, 80.0, 56.7, 3)


class _Handler(http.server.BaseHTTPRequestHandler):
    statuses: list[int] = []
    seen: list[dict] = []

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        status = self.statuses.pop(0) if self.statuses else 200
        payload = {"choices": [{"message": {"content": "7 8\nfine"}}]} if status == 200 else {"error": "busy"}
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def local_server():
    _Handler.statuses, _Handler.seen = [], []
    server = http.server.HTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/v1", _Handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_client_and_review_all(bench_files, local_server):
    url, handler = local_server
    handler.statuses = [503]  # one retriable failure, then success
    client = judge.ChatClient(url, "sk-test", "judge-model", timeout=5, retry_wait=0)
    out = bench_files / "reviews" / "model.jsonl"
    reviews = judge.review_all(_requests(bench_files), client, out)
    assert [r["tuple"] for r in reviews] == [[7.0, 8.0], [7.0, 8.0]]
    assert len(handler.seen) == 3 and handler.seen[0]["path"] == "/v1/chat/completions"
    request = handler.seen[-1]
    assert request["auth"] == "Bearer sk-test"
    assert request["body"]["model"] == "judge-model" and request["body"]["temperature"] == 0.2
    assert request["body"]["messages"][0] == {"role": "system", "content": judge.SYSTEM_PROMPT}
    assert [json.loads(x)["question_id"] for x in out.read_text().splitlines()] == [0, 1]


def test_client_gives_up_on_client_errors(local_server):
    url, handler = local_server
    handler.statuses = [400]
    client = judge.ChatClient(url, None, "m", timeout=5, retry_wait=0)
    with pytest.raises(RuntimeError, match="HTTP 400"):
        client.complete("s", "u")
    assert len(handler.seen) == 1 and handler.seen[0]["auth"] is None


def test_rerun_keeps_and_skips_finished_reviews(bench_files, local_server):
    url, handler = local_server
    client = judge.ChatClient(url, None, "judge-model", timeout=5, retry_wait=0)
    out = bench_files / "reviews" / "model.jsonl"
    first = judge.review_all(_requests(bench_files), client, out)
    paid = out.read_bytes()
    assert len(handler.seen) == 2
    again = judge.review_all(_requests(bench_files), client, out)
    assert len(handler.seen) == 2  # nothing asked again
    assert out.read_bytes() == paid and again == first


def test_review_resumes_after_a_kill(bench_files, local_server, caplog):
    url, handler = local_server
    client = judge.ChatClient(url, None, "judge-model", timeout=5, retry_wait=0)
    out = bench_files / "model_reviews.jsonl"
    kept = {"id": 1, "question_id": 0, "answer1_id": "g0", "answer2_id": "m0", "category": "llava_bench_conv",
            "content": "9 3\nearlier", "tuple": [9.0, 3.0]}  # fmt: skip
    out.write_text(json.dumps(kept) + "\n" + '{"id": 2, "question_id": 1, "answer1_i')  # killed mid-line
    with caplog.at_level("WARNING", logger="llava.eval.scoring_io"):
        reviews = judge.review_all(_requests(bench_files), client, out)
    assert "partial last line" in caplog.text
    assert len(handler.seen) == 1 and "Describe it." in handler.seen[0]["body"]["messages"][1]["content"]
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert lines[0] == kept and reviews[0] == kept  # the paid review is kept as it was
    assert (lines[1]["question_id"], lines[1]["tuple"]) == (1, [7.0, 8.0]) and len(lines) == 2


def test_reviews_of_other_answers_are_refused(bench_files, local_server):
    url, _ = local_server
    client = judge.ChatClient(url, None, "judge-model", timeout=5, retry_wait=0)
    out = bench_files / "model_reviews.jsonl"
    stale = {
        "question_id": 0,
        "answer1_id": "g0",
        "answer2_id": "OLD",
        "category": "llava_bench_conv",
        "tuple": [1, 1],
    }
    out.write_text(json.dumps(stale) + "\n")
    with pytest.raises(ValueError, match=r"model_reviews.jsonl:1: review of .*'OLD'.*pass --overwrite"):
        judge.review_all(_requests(bench_files), client, out)
    assert len(judge.review_all(_requests(bench_files), client, out, overwrite=True)) == 2


def _review_args(d, *extra):
    return ["review", "-q", str(d / "questions.jsonl"), "-c", str(d / "context.jsonl"),
            "-a", str(d / "gpt4.jsonl"), str(d / "model.jsonl"), "-o", str(d / "out.jsonl"), *extra]  # fmt: skip


def test_no_default_endpoint_and_no_implicit_key(bench_files, local_server, monkeypatch):
    url, handler = local_server
    monkeypatch.setenv("OPENAI_API_KEY", "sk-must-not-leave")
    with pytest.raises(SystemExit, match="--base-url is required: the judge has no default endpoint"):
        judge.main(_review_args(bench_files))
    assert not handler.seen and not (bench_files / "out.jsonl").exists()
    judge.main(_review_args(bench_files, "--base-url", url, "--model", "m"))
    assert [seen["auth"] for seen in handler.seen] == [None, None]  # no key unless --api-key-env
    with pytest.raises(SystemExit, match="environment variable JUDGE_KEY .--api-key-env. is not set"):
        judge.main(_review_args(bench_files, "--base-url", url, "--api-key-env", "JUDGE_KEY"))


def test_rerun_with_another_judge_is_refused(bench_files, local_server):
    url, handler = local_server
    judge.main(_review_args(bench_files, "--base-url", url, "--model", "judge-a"))
    judge.main(
        _review_args(bench_files, "--base-url", url + "/", "--model", "judge-a")
    )  # same judge elsewhere
    assert len(handler.seen) == 2
    with pytest.raises(
        ValueError,
        match=r"out.jsonl was written by another run .*\n  model: 'judge-a' in the file, 'judge-b' now",
    ):
        judge.main(_review_args(bench_files, "--base-url", url, "--model", "judge-b"))
    judge.main(_review_args(bench_files, "--base-url", url, "--model", "judge-b", "--overwrite"))
    assert len(handler.seen) == 4


def test_record_less_reviews_are_refused_unless_adopted(bench_files, local_server):
    url, handler = local_server
    out, meta = bench_files / "out.jsonl", bench_files / "out.jsonl.meta.json"
    kept = {"id": 1, "question_id": 0, "answer1_id": "g0", "answer2_id": "m0", "category": "llava_bench_conv",
            "content": "9 3\nearlier", "tuple": [9.0, 3.0]}  # fmt: skip
    out.write_text(json.dumps(kept) + "\n")  # reviews of unknown origin: no judge record beside them
    args = _review_args(bench_files, "--base-url", url, "--model", "judge-a")
    with pytest.raises(ValueError, match=r"out.jsonl holds reviews but no judge record .*--adopt-reviews"):
        judge.main(args)
    assert not meta.exists() and not handler.seen and out.read_text() == json.dumps(kept) + "\n"
    # Adopted, but a review of other answers: refused, and no record is written over it.
    stale = {**kept, "answer2_id": "OLD"}
    out.write_text(json.dumps(stale) + "\n")
    with pytest.raises(ValueError, match=r"out.jsonl:1: review of .*'OLD'"):
        judge.main([*args, "--adopt-reviews"])
    assert not meta.exists() and not handler.seen
    # Adopted and consistent: kept, the missing review asked, and the record written.
    out.write_text(json.dumps(kept) + "\n")
    judge.main([*args, "--adopt-reviews"])
    assert len(handler.seen) == 1 and json.loads(meta.read_text())["model"] == "judge-a"
    assert json.loads(out.read_text().splitlines()[0]) == kept
    judge.main(args)  # from now on a plain rerun resumes under the record
    assert len(handler.seen) == 1


def test_summary_and_requests_check_coverage(bench_files, write_jsonl):
    reviews = [{"question_id": 0, "category": "llava_bench_conv", "tuple": [8, 6]}]
    with pytest.raises(CoverageError, match=r"1 missing \(e.g. 1\)"):
        judge.summarize(reviews, "r.jsonl", expected=[0, 1])
    with pytest.raises(CoverageError, match=r"0 x2"):
        judge.summarize(reviews * 2, "r.jsonl")
    write_jsonl(bench_files / "model.jsonl", [{"question_id": 0, "text": "A vehicle.", "answer_id": "m0"}])
    with pytest.raises(
        CoverageError, match=r"model answers: 1 of 2 expected question\(s\) answered; 1 missing"
    ):
        _requests(bench_files)
