"""How loudly a refused reaction is answered: a reaction cannot be answered privately the way a command
can, so a note in the channel would let one member flood it (twelve reactions, twelve notes).

Each member hears about a given message's refusal once; in public at most once a minute, and by DM after
that. Entries are forgotten after an hour, so memory stays bounded.
"""

from __future__ import annotations

import enum

from bot.domain.clock import Clock

PUBLIC_EVERY_SECONDS = 60.0
REMEMBER_SECONDS = 3600.0


class Reply(enum.Enum):
    PUBLIC = "public"  # a note in the channel that mentions the member
    PRIVATE = "private"  # a direct message to the member
    NONE = "none"  # already told about this message


class RefusalReplies:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._told: dict[tuple[int, int], float] = {}  # (member, message) -> when
        self._public: dict[int, float] = {}  # member -> when they last got a public note

    def reply_for(self, member_id: int, message_id: int) -> Reply:
        """How to answer this member's refused reaction on this message, and remember it."""
        now = self._clock.monotonic()
        self._forget_before(now - REMEMBER_SECONDS)
        if (member_id, message_id) in self._told:
            return Reply.NONE
        self._told[member_id, message_id] = now
        last_public = self._public.get(member_id)
        if last_public is not None and now - last_public < PUBLIC_EVERY_SECONDS:
            return Reply.PRIVATE
        self._public[member_id] = now
        return Reply.PUBLIC

    def _forget_before(self, moment: float) -> None:
        for key in [key for key, when in self._told.items() if when < moment]:
            del self._told[key]
        for member in [member for member, when in self._public.items() if when < moment]:
            del self._public[member]
