"""Buttons that survive restarts: each custom_id carries the job (and image) it acts on.

They are `DynamicItem`s registered once at start, so a button on a message from last week still works:
discord.py parses the custom_id with the template and the database supplies everything else.
"""

from __future__ import annotations

import re
from collections.abc import Coroutine
from typing import Any, Protocol, cast

import discord

from bot.discord_app.errors import reply_error

PREFIX = "ib"  # short, so every custom_id stays far below Discord's 100 characters


class ButtonActions(Protocol):
    """What the buttons ask the bot to do; implemented by the imagine cog."""

    async def show_single(self, interaction: discord.Interaction[Any], job_id: int, index: int) -> None: ...
    async def vary(self, interaction: discord.Interaction[Any], job_id: int, index: int) -> None: ...
    async def upscale(self, interaction: discord.Interaction[Any], job_id: int, index: int) -> None: ...
    async def reroll(self, interaction: discord.Interaction[Any], job_id: int) -> None: ...
    async def cancel(self, interaction: discord.Interaction[Any], job_id: int) -> None: ...


def _actions(interaction: discord.Interaction[Any]) -> ButtonActions:
    return cast(ButtonActions, interaction.client.button_actions)


async def _press(interaction: discord.Interaction[Any], action: Coroutine[Any, Any, None]) -> None:
    """Run a button's action; any error becomes the same kind reply as a slash command's."""
    try:
        await action
    except Exception as error:
        await reply_error(interaction, error)


# The shared bases need a template to be classes at all; they are never registered, so it never matches.
_ABSTRACT = r"(?!)"


class _ImageButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=_ABSTRACT):
    """A button about one image of a job: `ib:<action>:<job>:<index>`."""

    action = ""

    def __init__(
        self,
        job_id: int,
        index: int,
        *,
        label: str | None = None,
        emoji: str | None = None,
        style: discord.ButtonStyle = discord.ButtonStyle.secondary,
        row: int | None = None,
    ) -> None:
        super().__init__(
            discord.ui.Button(
                label=label,
                emoji=emoji,
                style=style,
                row=row,
                custom_id=f"{PREFIX}:{self.action}:{job_id}:{index}",
            )
        )
        self.job_id = job_id
        self.index = index

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> _ImageButton:
        return cls(int(match["job"]), int(match["index"]))


class UpscaleViewButton(_ImageButton, template=rf"{PREFIX}:u:(?P<job>\d{{1,19}}):(?P<index>[0-3])"):
    """U1–U4: the chosen image alone, at full size, with its own buttons."""

    action = "u"

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await _press(interaction, _actions(interaction).show_single(interaction, self.job_id, self.index))


class VaryButton(_ImageButton, template=rf"{PREFIX}:v:(?P<job>\d{{1,19}}):(?P<index>[0-3])"):
    """V1–V4 and Vary: four variations of the chosen image."""

    action = "v"

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await _press(interaction, _actions(interaction).vary(interaction, self.job_id, self.index))


class UpscaleButton(_ImageButton, template=rf"{PREFIX}:x:(?P<job>\d{{1,19}}):(?P<index>[0-3])"):
    """Upscale 2×: a diffusion upscale of the chosen image."""

    action = "x"

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await _press(interaction, _actions(interaction).upscale(interaction, self.job_id, self.index))


class _JobButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=_ABSTRACT):
    """A button about a whole job: `ib:<action>:<job>`."""

    action = ""

    def __init__(
        self,
        job_id: int,
        *,
        label: str | None = None,
        emoji: str | None = None,
        style: discord.ButtonStyle = discord.ButtonStyle.secondary,
        row: int | None = None,
    ) -> None:
        super().__init__(
            discord.ui.Button(
                label=label, emoji=emoji, style=style, row=row, custom_id=f"{PREFIX}:{self.action}:{job_id}"
            )
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction[Any], item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> _JobButton:
        return cls(int(match["job"]))


class RerollButton(_JobButton, template=rf"{PREFIX}:r:(?P<job>\d{{1,19}})"):
    """🔄: the same prompt again with new seeds."""

    action = "r"

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await _press(interaction, _actions(interaction).reroll(interaction, self.job_id))


class CancelButton(_JobButton, template=rf"{PREFIX}:c:(?P<job>\d{{1,19}})"):
    """Cancel a queued or running job."""

    action = "c"

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await _press(interaction, _actions(interaction).cancel(interaction, self.job_id))


DYNAMIC_ITEMS: tuple[type[discord.ui.DynamicItem[Any]], ...] = (
    UpscaleViewButton,
    VaryButton,
    UpscaleButton,
    RerollButton,
    CancelButton,
)


def grid_view(job_id: int) -> discord.ui.View:
    """U1–U4 and 🔄 on the first row, V1–V4 on the second, as in Midjourney."""
    view = discord.ui.View(timeout=None)
    for index in range(4):
        view.add_item(UpscaleViewButton(job_id, index, label=f"U{index + 1}", row=0))
    view.add_item(RerollButton(job_id, emoji="🔄", row=0))
    for index in range(4):
        view.add_item(VaryButton(job_id, index, label=f"V{index + 1}", row=1))
    return view


def single_view(job_id: int, index: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(
        UpscaleButton(job_id, index, label="Upscale 2×", emoji="🔍", style=discord.ButtonStyle.primary)
    )
    view.add_item(VaryButton(job_id, index, label="Vary", emoji="🪄"))
    view.add_item(RerollButton(job_id, emoji="🔄"))
    return view


def cancel_view(job_id: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(CancelButton(job_id, label="Cancel", style=discord.ButtonStyle.danger))
    return view
