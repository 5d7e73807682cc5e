"""Logging that never writes a configured secret: every formatted line has them replaced by ***.

Our own log calls name no secret; this also covers what libraries print (panoramisk logs an unanswered AMI
Login action whole, Secret included, when the connection drops) and exception texts that quote a URL.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from urllib.parse import unquote, urlsplit

from aiohttp.http_exceptions import HttpProcessingError

from config import Settings

REDACTED = "***"
# Shorter strings would blot out ordinary words; every generated secret is far longer.
_MIN_SECRET_LENGTH = 6


def _url_password(url: str) -> str | None:
    try:
        password = urlsplit(url).password
    except ValueError:
        return None
    return unquote(password) if password else None


def settings_secrets(settings: Settings) -> list[str]:
    """Every secret value the settings hold: AMI secret, session secret, passwords, tokens, URL passwords."""
    values = [settings.ami_secret, settings.session_secret, settings.admin_password, settings.metrics_token,
              settings.agi_secret, settings.asr_ws_token,
              _url_password(settings.database_url), _url_password(settings.redis_url)]
    values += [agent.password for agent in settings.agents]
    values += [agent.sip_secret for agent in settings.agents]
    return [v for v in values if v]


class RedactingFormatter(logging.Formatter):
    """A formatter that replaces each known secret in the finished line (message, arguments, traceback)."""

    def __init__(self, fmt: str, secrets: Iterable[str]) -> None:
        super().__init__(fmt)
        # Longest first, so a secret containing another is replaced whole.
        self._secrets = sorted({s for s in secrets if len(s) >= _MIN_SECRET_LENGTH}, key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        """The line as logging.Formatter makes it, with the secrets replaced."""
        text = super().format(record)
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text


class ClientErrorFilter(logging.Filter):
    """aiohttp logs a client's malformed request (a request line or header too long, a bad header) at ERROR with a
    full traceback; the client got its 400 already. One INFO line says so: no stranger fills the log with
    tracebacks. Failures of our own handlers keep theirs."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite records about malformed requests to one line; pass every record on."""
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            lines = [line.strip() for line in str(exc.message or exc).splitlines() if line.strip()]
            reason = (lines[0] if lines else type(exc).__name__)[:160]
            record.msg = f"{record.getMessage()}: malformed request refused with {exc.code} ({reason})"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def configure_logging(settings: Settings, fmt: str = "%(asctime)s %(levelname)s %(name)s: %(message)s") -> None:
    """Log to standard error at the configured level, with the settings' secrets redacted."""
    logging.basicConfig(level=settings.log_level, format=fmt)
    formatter = RedactingFormatter(fmt, settings_secrets(settings))
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter)
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, ClientErrorFilter) for f in server_log.filters):
        server_log.addFilter(ClientErrorFilter())
