"""No secret reaches a log line or a printed settings object, whoever logs it."""
from __future__ import annotations

import io
import logging

import pytest

from config import Settings
from hotline.log_redaction import REDACTED, RedactingFormatter, settings_secrets

SECRETS = {
    "ami_secret": "ami-SECRET-value-1",
    "session_secret": "session-SECRET-value-2",
    "admin_password": "admin-PASSWORD-value-3",
    "metrics_token": "metrics-TOKEN-value-4",
}
AGENT_PASSWORD = "agent-PASSWORD-value-5"
REDIS_PASSWORD = "redis-PASSWORD-value-6"
DB_PASSWORD = "db-PASSWORD-value-7"


@pytest.fixture
def settings() -> Settings:
    return Settings(**SECRETS, agents=[{"name": "agent1", "password": AGENT_PASSWORD}],
                    redis_url=f"redis://:{REDIS_PASSWORD}@127.0.0.1:6379/0",
                    database_url=f"postgresql+asyncpg://hotline:{DB_PASSWORD}@127.0.0.1/test")


def every_secret() -> list[str]:
    return [*SECRETS.values(), AGENT_PASSWORD, REDIS_PASSWORD, DB_PASSWORD]


def test_settings_repr_and_str_hold_no_secret(settings: Settings) -> None:
    for text in (repr(settings), str(settings), repr(settings.agents)):
        leaked = [s for s in every_secret() if s in text]
        assert not leaked, leaked
    assert "redis://:***@127.0.0.1:6379/0" in repr(settings)
    assert settings.ami_secret == SECRETS["ami_secret"], "the value itself is still there for the code that needs it"


def test_formatter_redacts_messages_arguments_and_tracebacks(settings: Settings) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(RedactingFormatter("%(levelname)s %(name)s: %(message)s", settings_secrets(settings)))
    logger = logging.getLogger("test.redaction")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        # What panoramisk prints of an AMI Login action left unanswered when the connection drops.
        logger.warning('Adding action "login" to awaiting list: %s',
                       f"Action: Login\r\nUsername: hotline\r\nSecret: {SECRETS['ami_secret']}\r\n")
        logger.info("connecting to %s", settings.redis_url)
        try:
            raise ConnectionError(f"could not log in with {AGENT_PASSWORD} to postgresql://hotline:{DB_PASSWORD}@x")
        except ConnectionError:
            logger.exception("database down")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert not [s for s in every_secret() if s in text], text
    assert f"Secret: {REDACTED}" in text and "database down" in text and "ConnectionError" in text


def test_short_values_are_not_blotted_out() -> None:
    formatter = RedactingFormatter("%(message)s", ["ab", "", "longer-secret"])
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "about a longer-secret", None, None)
    assert formatter.format(record) == f"about a {REDACTED}"
