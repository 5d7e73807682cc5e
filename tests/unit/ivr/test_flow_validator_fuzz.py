"""The flow validator (and parse_flow) fuzzed with malformed flows: every document gets a report of one-line errors,
never an exception and never a hang (Hypothesis, bounded and derandomized so CI repeats the same examples)."""
from __future__ import annotations

import concurrent.futures
from collections.abc import Collection, Iterator

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings

from ivr import FlowValidator
from ivr.flow_model import parse_flow
from tests.support.flow_fuzz import alias_bomb, base_flow, flow_yaml_texts

VALIDATE_TIMEOUT = 5.0  # seconds for one document; longer is a hang
MAX_MESSAGE = 1000
FUZZ = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


class Vocabulary:
    """A model knowing a few Korean words."""

    def missing(self, words: Collection[str]) -> list[str]:
        return [w for w in words if w not in {"버스", "상담원"}]


@pytest.fixture(scope="module")
def validator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlowValidator]:
    folder = tmp_path_factory.mktemp("flows")
    (folder / "welcome.wav").write_bytes(b"RIFF")
    recorded = tmp_path_factory.mktemp("recorded")
    yield FlowValidator(vocabulary_for=lambda lang, model: Vocabulary() if model == "default" else None,
                        queues=("operator", "complaints"), base_dir=folder, override_dir=recorded)


@pytest.fixture(scope="module")
def pool() -> Iterator[concurrent.futures.ThreadPoolExecutor]:
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as executor:
        yield executor


def _one_line(message: str) -> None:
    assert message.strip(), "empty message"
    assert "\n" not in message and "\r" not in message, f"multi-line message: {message[:300]!r}"
    assert len(message) <= MAX_MESSAGE, f"{len(message)}-character message: {message[:200]!r}..."


def test_the_flow_being_broken_is_valid(validator: FlowValidator) -> None:
    report = validator.validate_text(yaml.safe_dump(base_flow(), allow_unicode=True))
    assert report.ok, [str(e) for e in report.errors]


# Found by this fuzz (each raised out of the validator, a 500 in the console, before the fix):
@example("[" * 20_000 + "]" * 20_000)  # RecursionError in the YAML composer
@example("name: fuzz\nx: " + "1" * 5000 + "\n")  # ValueError: int beyond Python's digit limit
@example("name: fuzz\ndescription: 2026-13-45\n")  # ValueError: month must be in 1..12
@example("name: fuzz\ndescription: 2026-02-28 25:99:99\n")  # ValueError from the timestamp constructor
@example(alias_bomb(8, "kind"))  # 43 million list items printed into "unknown node kind" (a hang)
@example(yaml.safe_dump({**base_flow(), "nodes": {**base_flow()["nodes"], "welcome": {
    "kind": "play", "prompt": "file:" + "a" * 5000, "next": "hours"}}}))  # OSError: file name too long
@example(yaml.safe_dump({**base_flow(), "nodes": {**base_flow()["nodes"], "welcome": {
    "kind": "play", "prompt": "file:~" + "a" * 300 + "/x", "next": "hours"}}}))  # RuntimeError from expanduser
@example(yaml.safe_dump({**base_flow(), "nodes": {**base_flow()["nodes"], "hours": {
    "kind": "hours", "timezone": "a" * 5000, "weekly": {}, "open": "menu", "closed": "bye"}}}))  # 5000-char error
@given(text=flow_yaml_texts())
@FUZZ
def test_any_document_gets_a_report_of_one_line_errors(validator: FlowValidator,
                                                       pool: concurrent.futures.ThreadPoolExecutor,
                                                       text: str) -> None:
    report = pool.submit(validator.validate_text, text).result(timeout=VALIDATE_TIMEOUT)
    for issue in [*report.errors, *report.warnings]:
        _one_line(str(issue))
    if report.document is None:
        assert report.errors, "no document and no error saying why"
    assert report.to_dict()["ok"] is report.ok


@example("a: " + "{b: " * 10_000 + "1" + "}" * 10_000)
@example("name: fuzz\ndescription: 2026-02-30\n")
@given(text=flow_yaml_texts())
@FUZZ
def test_parse_flow_never_raises(pool: concurrent.futures.ThreadPoolExecutor, text: str) -> None:
    doc, errors = pool.submit(parse_flow, text).result(timeout=VALIDATE_TIMEOUT)
    for error in errors:
        _one_line(error.message)
    assert doc is not None or errors


def test_a_deep_document_is_refused_in_one_line(validator: FlowValidator) -> None:
    report = validator.validate_text("[" * 20_000 + "]" * 20_000)
    assert report.document is None
    assert [str(e) for e in report.errors] == ["not valid YAML: nested too deeply"]


def test_an_impossible_date_is_a_yaml_error(validator: FlowValidator) -> None:
    report = validator.validate_text("name: fuzz\ndescription: 2026-13-45\n")
    assert report.document is None
    assert [str(e) for e in report.errors] == ["not valid YAML: month must be in 1..12"]
