"""Who is asking: the member, where they asked from, and whether they moderate there."""

from __future__ import annotations

from dataclasses import dataclass

LOCAL_USER_ID = 0  # jobs made from the command line, not by a Discord member


@dataclass(frozen=True)
class Requester:
    user_id: int
    guild_id: int | None = None
    channel_id: int | None = None
    is_moderator: bool = False

    @classmethod
    def local(cls) -> Requester:
        return cls(user_id=LOCAL_USER_ID, is_moderator=True)
