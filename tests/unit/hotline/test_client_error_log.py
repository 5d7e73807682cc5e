"""A client's malformed request (a request line beyond aiohttp's limit) is logged as one INFO line, not an ERROR
with a traceback; failures of our own code keep their traceback."""
from __future__ import annotations

import logging

import pytest
from aiohttp.http_exceptions import LineTooLong

from hotline.log_redaction import ClientErrorFilter


def _record(exc: BaseException) -> logging.LogRecord:
    return logging.LogRecord("aiohttp.server", logging.ERROR, __file__, 1, "Error handling request from %s",
                             ("127.0.0.1",), (type(exc), exc, None))


def test_a_malformed_request_is_one_info_line(caplog: pytest.LogCaptureFixture) -> None:
    record = _record(LineTooLong("/api/agents/" + "a" * 9000, "8190"))
    assert ClientErrorFilter().filter(record) is True
    line = logging.Formatter("%(levelname)s %(name)s: %(message)s").format(record)
    assert "\n" not in line and "Traceback" not in line and len(line) < 300
    assert line.startswith("INFO aiohttp.server: Error handling request from 127.0.0.1: malformed request "
                           "refused with 400 (Got more than 8190 bytes when reading: ")


def test_our_own_failure_keeps_its_traceback() -> None:
    try:
        raise KeyError("bug")
    except KeyError as exc:
        record = _record(exc)
        record.exc_info = (KeyError, exc, exc.__traceback__)
    assert ClientErrorFilter().filter(record) is True
    assert record.levelno == logging.ERROR
    assert "Traceback" in logging.Formatter().format(record)
