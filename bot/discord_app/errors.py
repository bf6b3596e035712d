"""One place that turns any error during a command or button press into a short, kind reply.

Order of handling:
1. `ImagineError` (bad input, a limit, not allowed, unknown job): its own message, ephemeral.
2. `CheckFailure` from app commands (missing permissions, used outside a server): a plain explanation.
3. `DiscordServerError`: Discord itself answered 5xx past discord.py's retries (a button's answer could
   not be edited in, say); nothing is wrong on our side, so the member is asked to try again.
4. Anything else: a reference id the member can give a moderator; the same id is in the log with the
   traceback. The job's state is left to the store, which is never half-written.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

import discord
from discord import app_commands

from bot.domain.errors import ImagineError

log = logging.getLogger(__name__)


def describe(error: BaseException) -> tuple[str, bool]:
    """The member-facing text for an error, and whether it was expected (no traceback needed)."""
    original = getattr(error, "original", error)  # CommandInvokeError wraps what the command raised
    if isinstance(original, ImagineError):
        return str(original), True
    if isinstance(original, app_commands.NoPrivateMessage):
        return "This command only works in a server.", True
    if isinstance(original, app_commands.MissingPermissions):
        return "Only moderators (Manage Server) can use this command.", True
    if isinstance(original, app_commands.CheckFailure):
        return "You can't use this command here.", True
    if isinstance(original, discord.DiscordServerError):
        return (
            "Discord is having trouble right now and dropped my answer. Please try again in a moment.",
            True,
        )
    return "", False


async def reply_error(interaction: discord.Interaction[Any], error: BaseException) -> None:
    """Tell the member what went wrong, whether or not the interaction was answered already."""
    text, expected = describe(error)
    if not expected:
        reference = secrets.token_hex(4)
        log.error(
            "unexpected error handling an interaction",
            exc_info=error,
            extra={"ref": reference, "user_id": interaction.user.id, "guild_id": interaction.guild_id},
        )
        text = f"Something went wrong on my side (ref `{reference}`). A moderator can look it up in the log."
    try:
        if interaction.response.is_done():
            await interaction.followup.send(text, ephemeral=True)
        else:
            await interaction.response.send_message(text, ephemeral=True)
    except discord.HTTPException as failure:
        log.warning("could not send the error message", extra={"error": str(failure)})
