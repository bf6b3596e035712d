"""Logging: structlog renders both our records and the standard library's (discord.py, alembic).

Secrets never reach a log line: the bot token (given as `secrets`), interaction and webhook tokens in
Discord URLs, and anything shaped like a bot token are replaced with `***` in messages, extra fields and
exception text alike (`RedactSecrets` for structlog, `RedactingFilter` for any stdlib handler).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any

import structlog

MASK = "***"
# /webhooks/{application_id}/{token} and /interactions/{interaction_id}/{token}/callback
_URL_TOKEN = re.compile(r"(/(?:webhooks|interactions)/\d+/)[A-Za-z0-9_\-.]{16,}")
# A bot token: base64 user id, a timestamp part, an HMAC part.
_BOT_TOKEN = re.compile(r"[A-Za-z0-9_\-]{23,28}\.[A-Za-z0-9_\-]{6,7}\.[A-Za-z0-9_\-]{27,}")


class Redactor:
    """Replaces known secrets and Discord token shapes in text with `***`."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so a secret containing another is masked whole; short strings would mask noise.
        self._secrets = sorted({s for s in secrets if len(s) >= 8}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        text = _URL_TOKEN.sub(rf"\g<1>{MASK}", text)
        return _BOT_TOKEN.sub(MASK, text)

    def value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self(value)
        if isinstance(value, dict):
            return {key: self.value(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self.value(item) for item in value)
        return value


class RedactSecrets:
    """structlog processor: redacts every string in the event dict (run it after format_exc_info)."""

    def __init__(self, redactor: Redactor) -> None:
        self._redact = redactor

    def __call__(
        self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key, value in list(event_dict.items()):
            if key in ("exc_info", "_record", "_from_structlog"):
                continue  # format_exc_info already turned exc_info into the "exception" text
            event_dict[key] = self._redact.value(value)
        return event_dict


class RedactingFilter(logging.Filter):
    """stdlib filter: renders the record's message and exception text redacted, for any handler."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self._redact = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) or record.args:
            try:
                message = record.getMessage()
            except Exception:
                message = str(record.msg)
            redacted = self._redact(message)
            if redacted != message:
                record.msg, record.args = redacted, None
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            record.exc_text = self._redact(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = self._redact(record.exc_text)
        return True


def configure_logging(level: str = "INFO", *, json: bool = False, secrets: Iterable[str] = ()) -> None:
    redactor = Redactor(secrets)
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            RedactSecrets(redactor),
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    handler.addFilter(RedactingFilter(redactor))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Libraries that chatter at INFO; their warnings still come through.
    for noisy in ("httpx", "urllib3", "filelock", "alembic.runtime.migration"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
