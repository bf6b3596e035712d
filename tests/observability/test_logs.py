"""Log redaction: the bot token and interaction/webhook tokens never reach a rendered log line."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest
import structlog

from bot.runtime.logs import MASK, RedactingFilter, Redactor, configure_logging

BOT_TOKEN = "MTE5ODc2NTQzMjEwOTg3NjU0.GhIjKl.abcdefghijklmnopqrstuvwxyz0123456789AB"
INTERACTION_TOKEN = "aW50ZXJhY3Rpb246MTIzNDU2Nzg5MDEyMzQ1Njc4OTpzZWNyZXRUb2tlbg"
WEBHOOK_TOKEN = "x7Yq-Ww3_Zk9LmNoPqRsTuVwXyZ0123456789abcdEFGhij"


@pytest.fixture
def captured() -> Iterator[None]:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    yield
    root.handlers[:], level = saved
    root.setLevel(level)
    structlog.reset_defaults()


def _log_everything(stream: io.StringIO, *, json: bool) -> str:
    configure_logging("DEBUG", json=json, secrets=[BOT_TOKEN])
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    stdlib = logging.getLogger("discord.http")
    stdlib.warning("logging in using static token %s", BOT_TOKEN)
    stdlib.debug(f"POST https://discord.com/api/v10/interactions/1234567890/{INTERACTION_TOKEN}/callback")
    stdlib.info("PATCH /webhooks/987654321/%s/messages/@original has returned 200", WEBHOOK_TOKEN)
    try:
        raise RuntimeError(f"login failed for {BOT_TOKEN}")
    except RuntimeError:
        stdlib.exception("improper token")
    ours = structlog.get_logger("bot.test")
    ours.info("delivering", url=f"/webhooks/42/{WEBHOOK_TOKEN}", token=BOT_TOKEN)
    try:
        raise ValueError(f"bad interaction /interactions/55/{INTERACTION_TOKEN}/callback")
    except ValueError:
        ours.exception("structlog exception")
    return stream.getvalue()


@pytest.mark.parametrize("json", [False, True])
def test_secrets_never_reach_the_output(captured: None, json: bool) -> None:
    """Messages, formatted args, f-string URLs, extra fields and exception text are all redacted."""
    output = _log_everything(io.StringIO(), json=json)
    for secret in (BOT_TOKEN, INTERACTION_TOKEN, WEBHOOK_TOKEN, "abcdefghijklmnopqrstuvwxyz0123456789AB"):
        assert secret not in output
    assert output.count(MASK) >= 7
    assert "/interactions/1234567890/***/callback" in output
    assert "/webhooks/987654321/***/messages/@original" in output
    assert "login failed for ***" in output
    assert "RuntimeError" in output
    assert "ValueError" in output


def test_redactor_leaves_ordinary_text_alone() -> None:
    redact = Redactor(["short", BOT_TOKEN])
    text = "job 42 took 3.5 s for user 123456789012345678 at /interactions/12/abc"
    assert redact(text) == text  # short ids, short "tokens" and short secrets are not masked
    assert redact(f"token={BOT_TOKEN}!") == "token=***!"


def test_filter_redacts_for_a_plain_stdlib_handler() -> None:
    """RedactingFilter protects a handler with an ordinary logging.Formatter, exception text included."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.addFilter(RedactingFilter(Redactor([BOT_TOKEN])))
    logger = logging.getLogger("tests.observability.plain")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        logger.warning("token %s", BOT_TOKEN)
        try:
            raise RuntimeError(BOT_TOKEN)
        except RuntimeError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    output = stream.getvalue()
    assert BOT_TOKEN not in output
    assert "token ***" in output
    assert "RuntimeError: ***" in output
