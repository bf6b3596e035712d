"""Buttons that survive restarts: each custom_id carries the job (and image) it acts on.

They are `DynamicItem`s registered once at start, so a button on a message from last week still works:
discord.py parses the custom_id with the template and the database supplies everything else.
"""

from __future__ import annotations

import re
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, cast

import discord

from bot.discord_app.errors import reply_error

if TYPE_CHECKING:
    from bot.discord_app.client import ImagineBot
    from bot.discord_app.cogs.imagine import ImagineCog

PREFIX = "ib"  # short, so every custom_id stays far below Discord's 100 characters


def _actions(interaction: discord.Interaction[Any]) -> ImagineCog:
    """The imagine cog, which does what the buttons ask."""
    cog = cast("ImagineBot", interaction.client).imagine
    if cog is None:
        raise RuntimeError("the imagine cog is not loaded")
    return cog


async def _press(interaction: discord.Interaction[Any], action: Coroutine[Any, Any, None]) -> None:
    """Run a button's action; any error becomes the same kind reply as a slash command's."""
    try:
        await action
    except Exception as error:
        await reply_error(interaction, error)


# The shared base needs a template to be a class at all; it is never registered, so it never matches.
_ABSTRACT = r"(?!)"


class _ActionButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=_ABSTRACT):
    """A button whose custom_id is `ib:<action>:<job>[:<index>]`: all a press needs, after any restart."""

    action = ""
    per_image = True  # the custom_id names one image of the job, not just the job

    def __init__(
        self,
        job_id: int,
        index: int = 0,
        *,
        label: str | None = None,
        emoji: str | None = None,
        style: discord.ButtonStyle = discord.ButtonStyle.secondary,
        row: int | None = None,
    ) -> None:
        address = (
            f"{job_id}:{index}" if "index" in self.__discord_ui_compiled_template__.groupindex else job_id
        )
        super().__init__(
            discord.ui.Button(
                label=label, emoji=emoji, style=style, row=row, custom_id=f"{PREFIX}:{self.action}:{address}"
            )
        )
        self.job_id = job_id
        self.index = index

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> _ActionButton:
        return cls(int(match["job"]), int(match.groupdict().get("index") or 0))


class UpscaleViewButton(_ActionButton, template=rf"{PREFIX}:u:(?P<job>[0-9]{{1,19}}):(?P<index>[0-3])"):
    """U1–U4: the chosen image alone, at full size, with its own buttons."""

    action = "u"

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await _press(interaction, _actions(interaction).show_single(interaction, self.job_id, self.index))


class VaryButton(_ActionButton, template=rf"{PREFIX}:v:(?P<job>[0-9]{{1,19}}):(?P<index>[0-3])"):
    """V1–V4 and Vary: four variations of the chosen image."""

    action = "v"

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await _press(interaction, _actions(interaction).vary(interaction, self.job_id, self.index))


class UpscaleButton(_ActionButton, template=rf"{PREFIX}:x:(?P<job>[0-9]{{1,19}}):(?P<index>[0-3])"):
    """Upscale 2×: a diffusion upscale of the chosen image."""

    action = "x"

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await _press(interaction, _actions(interaction).upscale(interaction, self.job_id, self.index))


class RerollButton(_ActionButton, template=rf"{PREFIX}:r:(?P<job>[0-9]{{1,19}})"):
    """🔄: the same prompt again with new seeds."""

    action = "r"
    per_image = False

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await _press(interaction, _actions(interaction).reroll(interaction, self.job_id))


class CancelButton(_ActionButton, template=rf"{PREFIX}:c:(?P<job>[0-9]{{1,19}})"):
    """Cancel a queued or running job."""

    action = "c"
    per_image = False

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await _press(interaction, _actions(interaction).cancel(interaction, self.job_id))


class DeleteButton(_ActionButton, template=rf"{PREFIX}:d:(?P<job>[0-9]{{1,19}})"):
    """🗑: remove the result (its messages and image files); for its member or a moderator."""

    action = "d"
    per_image = False

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await _press(interaction, _actions(interaction).delete_result(interaction, self.job_id))


DYNAMIC_ITEMS: tuple[type[discord.ui.DynamicItem[Any]], ...] = (
    UpscaleViewButton,
    VaryButton,
    UpscaleButton,
    RerollButton,
    CancelButton,
    DeleteButton,
)


def _delete_button(job_id: int, row: int | None = None) -> DeleteButton:
    return DeleteButton(job_id, emoji="🗑", row=row)


def grid_view(job_id: int) -> discord.ui.View:
    """U1–U4 and 🔄 on the first row, V1–V4 and 🗑 on the second (Discord allows 5 buttons a row)."""
    view = discord.ui.View(timeout=None)
    for index in range(4):
        view.add_item(UpscaleViewButton(job_id, index, label=f"U{index + 1}", row=0))
    view.add_item(RerollButton(job_id, emoji="🔄", row=0))
    for index in range(4):
        view.add_item(VaryButton(job_id, index, label=f"V{index + 1}", row=1))
    view.add_item(_delete_button(job_id, row=1))
    return view


def single_view(job_id: int, index: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(
        UpscaleButton(job_id, index, label="Upscale 2×", emoji="🔍", style=discord.ButtonStyle.primary)
    )
    view.add_item(VaryButton(job_id, index, label="Vary", emoji="🪄"))
    view.add_item(RerollButton(job_id, emoji="🔄"))
    view.add_item(_delete_button(job_id))
    return view


def upscale_view(job_id: int) -> discord.ui.View:
    """An upscale's result: nothing to make from it, only 🗑."""
    view = discord.ui.View(timeout=None)
    view.add_item(_delete_button(job_id))
    return view


def cancel_view(job_id: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(CancelButton(job_id, label="Cancel", style=discord.ButtonStyle.danger))
    return view
