"""Logging: structlog renders both our records and the standard library's (discord.py, alembic).

Secrets never reach a log line: the bot token (given as `secrets`), interaction and webhook tokens in
Discord URLs, and anything shaped like a bot token are replaced with `***` in messages, extra fields and
exception text alike (`RedactSecrets` for structlog, `RedactingFilter` for any stdlib handler).

Each job's transitions are INFO lines whose fields (job, guild, member, kind, model, size, steps, batch,
queue_wait, render_time…) are passed as `extra=` and rendered as key=value, or as JSON keys with
`LOG_JSON=true`. An exception nobody caught, in the main thread or another, is one CRITICAL record
("fatal error") with its traceback, in the same format. Library noise stays out: discord.py's warnings
that voice is unsupported, and the model libraries' chatter below ERROR (inference/quiet.py also turns
off their progress bars once they are imported); `LOG_LEVEL=DEBUG` shows the model libraries' warnings.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Iterable, MutableMapping
from types import TracebackType
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


# discord.py warns at every start that voice needs PyNaCl and davey; the bot never uses voice.
VOICE_WARNINGS = ("PyNaCl is not installed", "davey is not installed")
# Libraries that chatter at INFO; their warnings still come through.
CHATTY_LIBRARIES = ("httpx", "urllib3", "filelock", "alembic.runtime.migration")
# The model libraries warn about things an operator cannot act on (deprecations, unused weights): only
# their errors come through, unless LOG_LEVEL=DEBUG.
MODEL_LIBRARIES = ("diffusers", "transformers", "huggingface_hub", "accelerate", "peft")


class DropMessages(logging.Filter):
    """Drops records whose message starts with one of the given texts."""

    def __init__(self, starts: Iterable[str]) -> None:
        super().__init__()
        self._starts = tuple(starts)

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self._starts)


_VOICE_FILTER = DropMessages(VOICE_WARNINGS)
_fatal_log = logging.getLogger("bot.fatal")


def _log_uncaught(kind: type[BaseException], error: BaseException, traceback: TracebackType | None) -> None:
    """sys.excepthook: an exception that ends the program, logged as one structured CRITICAL record."""
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, error, traceback)
        return
    _fatal_log.critical("fatal error: %s", error, exc_info=(kind, error, traceback))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    """threading.excepthook: the same for a thread that died of an exception."""
    if args.exc_value is None or issubclass(args.exc_type, SystemExit):
        return
    thread = args.thread.name if args.thread is not None else "?"
    _fatal_log.critical(
        "thread %s failed: %s",
        thread,
        args.exc_value,
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
        extra={"thread_name": thread},
    )


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
    for noisy in CHATTY_LIBRARIES:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    model_level = logging.WARNING if root.getEffectiveLevel() <= logging.DEBUG else logging.ERROR
    for library in MODEL_LIBRARIES:
        logging.getLogger(library).setLevel(model_level)
    logging.getLogger("discord.client").addFilter(_VOICE_FILTER)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
