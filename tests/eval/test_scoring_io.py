"""The shared coverage check and the append-safe JSONL reader."""

import logging

import pytest

from llava.eval.scoring_io import CoverageError, check_coverage, index_answers, read_jsonl_for_append


def test_coverage_counts_missing_extra_and_duplicated():
    with pytest.raises(CoverageError) as err:
        check_coverage([1, 2, 3, 4, 5, 6, 7], [1, 1, 2, 9, 10], "a.jsonl")
    message = str(err.value)
    assert message.startswith("a.jsonl: 2 of 7 expected question(s) answered; 5 missing (e.g. 3, 4, 5, 6, 7)")
    assert (
        "2 extra, not among the questions (e.g. 9, 10)" in message
        and "1 answered more than once (e.g. 1 x2)" in message
    )
    assert "--allow-missing" not in message  # extra and duplicated answers cannot be opted out of


def test_allow_missing_logs_and_returns_the_counts(caplog):
    with caplog.at_level(logging.WARNING, logger="llava.eval.scoring_io"):
        coverage = check_coverage(range(10), range(3), "a.jsonl", allow_missing=True)
    assert coverage.as_dict() == {"expected": 10, "answered": 3, "missing": 7, "extra": 0, "duplicated": 0}
    assert coverage.partial == "3 of 10 questions" and check_coverage(range(3), range(3), "b").partial is None
    assert "7 missing (e.g. 3, 4, 5, 6, 7, ...)" in caplog.text and "--allow-missing" in caplog.text
    with pytest.raises(CoverageError, match="pass --allow-missing to score only the answered ones"):
        check_coverage(range(10), range(3), "a.jsonl")


def test_a_key_listed_twice_needs_two_answers():
    assert check_coverage(["a", "a", "b"], ["a", "b", "a"], "s").complete
    with pytest.raises(
        CoverageError, match=r"2 of 3 expected question\(s\) answered; 1 missing \(e.g. 'a'\)"
    ):
        check_coverage(["a", "a", "b"], ["a", "b"], "s")
    with pytest.raises(CoverageError, match=r"'b' x2"):
        check_coverage(["a", "a", "b"], ["a", "a", "b", "b"], "s")


def test_index_answers_refuses_ambiguous_question_lists():
    records = [{"question_id": 1}, {"question_id": 2}]
    by_id, coverage = index_answers(records, lambda r, where: r["question_id"], [2, 1], "a.jsonl")
    assert by_id == {1: records[0], 2: records[1]} and coverage.complete
    with pytest.raises(ValueError, match="the questions list 1 id\\(s\\) more than once, e.g. 1"):
        index_answers(records, lambda r, where: r["question_id"], [1, 1, 2], "a.jsonl")


def test_read_for_append_drops_a_partial_last_line_only(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n{"a": ')
    assert [v for _, v in read_jsonl_for_append(path)] == [{"a": 1}, {"a": 2}]
    assert path.read_text() == '{"a": 1}\n{"a": 2}\n'
    path.write_text('{"a": 1}')  # complete, without its newline
    assert read_jsonl_for_append(path) == [(1, {"a": 1})] and path.read_text() == '{"a": 1}\n'
    path.write_text('{"a": 1}\n{"a": \n{"a": 3}\n')
    with pytest.raises(ValueError, match=r"out.jsonl:2: not valid JSON .*pass --overwrite"):
        read_jsonl_for_append(path)
    assert read_jsonl_for_append(tmp_path / "absent.jsonl") == []
