"""Refused reactions: once per member and message, in public at most once a minute."""

from __future__ import annotations

from bot.domain.clock import FakeClock
from bot.domain.refusals import PUBLIC_EVERY_SECONDS, REMEMBER_SECONDS, RefusalReplies, Reply


def test_a_member_hears_once_per_message() -> None:
    """Twelve reactions on one message get one answer."""
    replies = RefusalReplies(FakeClock())
    answers = [replies.reply_for(1, 100) for _ in range(12)]
    assert answers == [Reply.PUBLIC] + [Reply.NONE] * 11


def test_public_at_most_once_a_minute_then_private() -> None:
    """Refusals on other messages within the minute go by DM; after a minute, in public again."""
    clock = FakeClock()
    replies = RefusalReplies(clock)
    assert replies.reply_for(1, 100) is Reply.PUBLIC
    clock.advance(10)
    assert replies.reply_for(1, 101) is Reply.PRIVATE
    assert replies.reply_for(1, 102) is Reply.PRIVATE
    clock.advance(PUBLIC_EVERY_SECONDS)
    assert replies.reply_for(1, 103) is Reply.PUBLIC


def test_members_are_counted_apart() -> None:
    replies = RefusalReplies(FakeClock())
    assert replies.reply_for(1, 100) is Reply.PUBLIC
    assert replies.reply_for(2, 100) is Reply.PUBLIC


def test_old_answers_are_forgotten() -> None:
    """After an hour the same refusal may be answered again (and memory stays bounded)."""
    clock = FakeClock()
    replies = RefusalReplies(clock)
    assert replies.reply_for(1, 100) is Reply.PUBLIC
    clock.advance(REMEMBER_SECONDS + 1)
    assert replies.reply_for(1, 100) is Reply.PUBLIC
