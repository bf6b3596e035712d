"""Moderator commands, all under `/imagine-mod` so they are never mistaken for the server's own `/ban`:
hidden from members (Manage Server), server-only, and checked again by the service when run."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord_app import presenters
from bot.discord_app.cogs.imagine import requester_of
from bot.domain.records import GuildSettingsChanges
from bot.domain.safety import SafetyMode, Shown
from bot.services.moderation import ModerationService

if TYPE_CHECKING:
    from bot.discord_app.client import ImagineBot

LOG_PAGE_SIZE = 10
LOGGED_ACTIONS = (
    "ban",
    "unban",
    "quota.set",
    "quota.reset",
    "quota.default",
    "limits.update",
    "queue.clear",
    "blocked_words.add",
    "blocked_words.remove",
    "result.delete",
    "result.release",
    "result.recheck",
    "safety.update",
)


@app_commands.default_permissions(manage_guild=True)
@app_commands.guild_only()
class ModerationCog(
    commands.GroupCog, group_name="imagine-mod", group_description="Moderate the image bot on this server"
):
    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    @property
    def moderation(self) -> ModerationService:
        return self.bot.app.moderation

    async def _reply(self, interaction: discord.Interaction[Any], text: str) -> None:
        await interaction.response.send_message(text[: presenters.CONTENT_LIMIT], ephemeral=True)

    # No cog_app_command_error here: discord.py calls a cog's handler *and then* the tree's `on_error`
    # (ImagineTree), so a handler here too would answer every refusal twice.

    # -- /imagine-mod quota ---------------------------------------------------------------------------

    quota = app_commands.Group(name="quota", description="Members' daily quotas")

    @quota.command(name="show", description="A member's usage today and their quota")
    async def quota_show(self, interaction: discord.Interaction[Any], member: discord.Member) -> None:
        result = await self.moderation.show_quota(requester_of(interaction), member.id)
        usage = result.usage
        limit = "no limit" if usage.daily_quota is None else f"{usage.daily_quota} a day"
        own = " (set for them)" if result.override is not None else " (server default)"
        await self._reply(
            interaction, f"{member.mention} has used {usage.used_today} jobs today; quota: {limit}{own}."
        )

    @quota.command(name="set", description="Give a member their own daily quota")
    @app_commands.describe(jobs="Jobs per day for this member")
    async def quota_set(
        self,
        interaction: discord.Interaction[Any],
        member: discord.Member,
        jobs: app_commands.Range[int, 0, 10_000],
    ) -> None:
        await self.moderation.set_quota(requester_of(interaction), member.id, jobs)
        await self._reply(interaction, f"{member.mention} can now make {jobs} jobs a day.")

    @quota.command(name="reset", description="Start a member's count for today again from zero")
    async def quota_reset(self, interaction: discord.Interaction[Any], member: discord.Member) -> None:
        await self.moderation.reset_quota(requester_of(interaction), member.id)
        await self._reply(interaction, f"{member.mention}'s usage for today is back to zero.")

    @quota.command(name="default", description="The daily quota of every member without their own")
    async def quota_default(
        self, interaction: discord.Interaction[Any], jobs: app_commands.Range[int, 0, 10_000]
    ) -> None:
        await self.moderation.set_default_quota(requester_of(interaction), jobs)
        await self._reply(interaction, f"Members can now make {jobs} jobs a day (unless set otherwise).")

    # -- /imagine-mod limits --------------------------------------------------------------------------

    @app_commands.command(name="limits", description="Show or change this server's limits")
    @app_commands.describe(
        rate_per_minute="Requests a member may make per minute",
        burst="Requests allowed at once before the rate applies",
        concurrent="Jobs a member may have queued or running",
        max_steps="Most denoising steps a job may ask for",
        everyone_buttons="Let everyone press the buttons on anyone's images (counts against the presser)",
        fast_by_default="Use the few-step fast model unless a member adds --quality",
    )
    async def limits(
        self,
        interaction: discord.Interaction[Any],
        rate_per_minute: app_commands.Range[int, 1, 600] | None = None,
        burst: app_commands.Range[int, 1, 100] | None = None,
        concurrent: app_commands.Range[int, 1, 100] | None = None,
        max_steps: app_commands.Range[int, 1, 150] | None = None,
        everyone_buttons: bool | None = None,
        fast_by_default: bool | None = None,
    ) -> None:
        changes: GuildSettingsChanges = {}
        if rate_per_minute is not None:
            changes["rate_per_minute"] = rate_per_minute
        if burst is not None:
            changes["rate_burst"] = burst
        if concurrent is not None:
            changes["max_concurrent"] = concurrent
        if max_steps is not None:
            changes["max_steps"] = max_steps
        if everyone_buttons is not None:
            changes["buttons_for_everyone"] = everyone_buttons
        if fast_by_default is not None:
            changes["fast_by_default"] = fast_by_default
        settings = await self.moderation.update_limits(requester_of(interaction), changes)
        defaults = self.bot.app.service.user_limits
        generation = self.bot.app.service.generation

        def value(own: object, default: object) -> str:
            return _number(own) if own is not None else f"{_number(default)} (default)"

        lines = [
            "**Limits on this server**" + (" (updated)" if changes else ""),
            f"Rate: {value(settings.rate_per_minute, defaults.rate_per_minute)} per minute, "
            f"burst {value(settings.rate_burst, defaults.burst)}",
            f"Jobs in flight per member: {value(settings.max_concurrent, defaults.max_concurrent)}",
            f"Daily quota: {value(settings.daily_quota, defaults.daily_quota)}",
            f"Max steps: {value(settings.max_steps, generation.max_steps)}",
            f"Everyone may press buttons: {'yes' if settings.buttons_for_everyone else 'no'}",
        ]
        if self.bot.app.service.fast_available:  # without a fast model there is nothing to choose
            lines.append(f"Fast mode by default: {'yes' if settings.fast_by_default else 'no'}")
        await self._reply(interaction, "\n".join(lines))

    # -- /imagine-mod ban, unban -----------------------------------------------------------------------

    @app_commands.command(name="ban", description="Stop a member from using the image bot (not a server ban)")
    async def ban(
        self,
        interaction: discord.Interaction[Any],
        member: discord.Member,
        reason: app_commands.Range[str, 1, 500] = "no reason given",
    ) -> None:
        await self.moderation.ban(requester_of(interaction), member.id, reason)
        await self._reply(
            interaction, f"{member.mention} can no longer use the image bot here; their jobs were cancelled."
        )

    @app_commands.command(name="unban", description="Let a member use the image bot again")
    async def unban(self, interaction: discord.Interaction[Any], member: discord.Member) -> None:
        removed = await self.moderation.unban(requester_of(interaction), member.id)
        text = "can use the image bot again" if removed else "was not banned from the image bot"
        await self._reply(interaction, f"{member.mention} {text}.")

    # -- /imagine-mod queue clear -----------------------------------------------------------------------

    queue = app_commands.Group(name="queue", description="The server's queue")

    @queue.command(name="clear", description="Cancel queued jobs: everyone's, or one member's")
    async def queue_clear(
        self, interaction: discord.Interaction[Any], member: discord.Member | None = None
    ) -> None:
        count = await self.moderation.clear_queue(requester_of(interaction), member.id if member else None)
        whose = f"{member.mention}'s" if member else "the server's"
        await self._reply(interaction, f"Cancelled {count} of {whose} queued jobs.")

    # -- /imagine-mod blocked-words --------------------------------------------------------------------

    blocked = app_commands.Group(name="blocked-words", description="Words a prompt may not contain")

    @blocked.command(name="add", description="Refuse prompts containing this word or phrase")
    async def blocked_add(
        self, interaction: discord.Interaction[Any], word: app_commands.Range[str, 1, 100]
    ) -> None:
        added = await self.moderation.add_blocked_word(requester_of(interaction), word)
        await self._reply(interaction, f"Blocked “{word}”." if added else f"“{word}” was already blocked.")

    @blocked.command(name="remove", description="Allow this word or phrase again")
    async def blocked_remove(
        self, interaction: discord.Interaction[Any], word: app_commands.Range[str, 1, 100]
    ) -> None:
        removed = await self.moderation.remove_blocked_word(requester_of(interaction), word)
        await self._reply(interaction, f"Unblocked “{word}”." if removed else f"“{word}” was not blocked.")

    @blocked.command(name="list", description="The blocked words and phrases")
    async def blocked_list(self, interaction: discord.Interaction[Any]) -> None:
        words = await self.moderation.blocked_words(requester_of(interaction))
        text = ", ".join(f"“{word}”" for word in words) if words else "No words are blocked."
        await self._reply(interaction, text)

    # -- /imagine-mod safety ------------------------------------------------------------------------------

    safety = app_commands.Group(name="safety", description="The image check on every result")

    @safety.command(name="set", description="Show or change how flagged images are shown here")
    @app_commands.describe(
        mode="block: hold for review; spoiler: blur; age-restricted: shown in NSFW channels, else blurred",
        threshold="How sure the check must be to flag an image, from 0.01 to 1 (default 0.6)",
    )
    @app_commands.choices(
        mode=[app_commands.Choice(name=mode.value, value=mode.value) for mode in SafetyMode]
    )
    async def safety_set(
        self,
        interaction: discord.Interaction[Any],
        mode: app_commands.Choice[str] | None = None,
        threshold: app_commands.Range[float, 0.01, 1.0] | None = None,
    ) -> None:
        policy = await self.bot.app.safety.change_policy(
            requester_of(interaction), SafetyMode(mode.value) if mode else None, threshold
        )
        updated = " (updated)" if mode or threshold else ""
        await self._reply(
            interaction,
            f"**Image check on this server**{updated}\nFlagged images: {policy.mode.value}\n"
            f"Threshold: {policy.threshold:g}",
        )

    @safety.command(name="release", description="Show a result the image check held back")
    @app_commands.describe(job="The job number shown on the held result")
    async def safety_release(
        self, interaction: discord.Interaction[Any], job: app_commands.Range[int, 1, 2**31 - 1]
    ) -> None:
        await self.bot.app.safety.release(requester_of(interaction), job)
        await self._reply(interaction, f"Released job #{job}; posting it now.")
        await self.bot.delivery.post_released(job)

    @safety.command(name="recheck", description="Run the image check on a result again")
    @app_commands.describe(job="The job number shown on the result")
    async def safety_recheck(
        self, interaction: discord.Interaction[Any], job: app_commands.Range[int, 1, 2**31 - 1]
    ) -> None:
        checked, scores = await self.bot.app.safety.recheck(requester_of(interaction), job)
        age_restricted = self.bot.delivery.age_restricted(interaction.channel_id or 0)
        shown = await self.bot.app.safety.shown(checked, scores, age_restricted_channel=age_restricted)
        listed = ", ".join("unscored" if score is None else f"{score:.2f}" for score in scores)
        text = f"Job #{job}: scores {listed}; it would be shown {shown.value} here."
        if checked.shown == Shown.HELD.value and shown is not Shown.HELD:
            text += " It was held; posting it now."
            await self._reply(interaction, text)
            await self.bot.delivery.post_released(job)
            return
        await self._reply(interaction, text)

    # -- /imagine-mod log --------------------------------------------------------------------------------

    @app_commands.command(name="log", description="What moderators did here, newest first")
    @app_commands.describe(
        member="Only actions on this member", action="Only this kind of action", page="Page, 1 is newest"
    )
    @app_commands.choices(action=[app_commands.Choice(name=name, value=name) for name in LOGGED_ACTIONS])
    async def log(
        self,
        interaction: discord.Interaction[Any],
        member: discord.Member | None = None,
        action: app_commands.Choice[str] | None = None,
        page: app_commands.Range[int, 1, 1000] = 1,
    ) -> None:
        entries, total = await self.moderation.action_log(
            requester_of(interaction),
            user_id=member.id if member else None,
            action=action.value if action else None,
            offset=(page - 1) * LOG_PAGE_SIZE,
            limit=LOG_PAGE_SIZE,
        )
        await self._reply(interaction, presenters.action_log_text(entries, total, page, LOG_PAGE_SIZE))


def _number(value: object) -> str:
    """600.0 as "600", None (no limit) as "no limit"."""
    if value is None:
        return "no limit"
    return f"{value:g}" if isinstance(value, float) else str(value)


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(ModerationCog(bot))
