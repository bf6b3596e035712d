"""What members see: embeds and texts for each stage of a job, within Discord's limits.

Pure functions of the job and its progress, so every message can be checked without Discord.
"""

from __future__ import annotations

import discord

from bot.domain.events import JobUpdate, QueueInfo
from bot.domain.jobs import Job, JobKind
from bot.domain.records import ModeratorAction
from bot.services.imagine import Usage

# Discord's limits (the API rejects anything longer).
TITLE_LIMIT = 256
DESCRIPTION_LIMIT = 4096
FIELD_LIMIT = 1024
CONTENT_LIMIT = 2000

QUEUED_COLOUR = discord.Colour.light_grey()
RUNNING_COLOUR = discord.Colour.blurple()
DONE_COLOUR = discord.Colour.green()
FAILED_COLOUR = discord.Colour.red()

KIND_WORDS = {
    JobKind.GENERATE: "Imagine",
    JobKind.REROLL: "Reroll",
    JobKind.VARIATION: "Variations",
    JobKind.UPSCALE: "Upscale 2×",
}


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def progress_bar(fraction: float, width: int = 16) -> str:
    filled = round(max(0.0, min(1.0, fraction)) * width)
    return "█" * filled + "░" * (width - filled)


def duration_words(seconds: float) -> str:
    if seconds < 1:
        return "under a second"
    if seconds < 90:
        return f"about {round(seconds)} s"
    if seconds < 3600:
        return f"about {round(seconds / 60)} min"
    return f"about {seconds / 3600:.1f} h"


def _base(job: Job, colour: discord.Colour) -> discord.Embed:
    params = job.spec.params
    embed = discord.Embed(
        title=truncate(params.prompt, TITLE_LIMIT),
        colour=colour,
    )
    if params.negative_prompt:
        embed.add_field(name="Without", value=truncate(params.negative_prompt, FIELD_LIMIT), inline=False)
    embed.set_footer(text=f"{KIND_WORDS[job.kind]} · job #{job.id}")
    return embed


def queued_embed(job: Job, info: QueueInfo | None) -> discord.Embed:
    embed = _base(job, QUEUED_COLOUR)
    if info is None or info.position == 0:
        embed.description = "⏳ Starting…"
    else:
        ahead = info.position - 1
        embed.description = (
            f"⏳ Queued: position {info.position}"
            + (f" ({ahead} job{'s' if ahead != 1 else ''} ahead)" if ahead else " (next up)")
            + f", ready in {duration_words(info.eta_seconds)}."
        )
    return embed


def progress_embed(job: Job, update: JobUpdate) -> discord.Embed:
    embed = _base(job, RUNNING_COLOUR)
    percent = round(update.fraction * 100)
    bar = progress_bar(update.fraction)
    embed.description = f"🎨 Generating `{bar}` {percent}% (step {update.step}/{update.total_steps})"
    return embed


def result_embed(job: Job, *, image_url: str | None, parent_url: str | None = None) -> discord.Embed:
    """The finished job with its provenance: everything needed to make the same image again. Without
    `image_url` (a spoilered result: an embed's image cannot be blurred) the picture is the attachment."""
    params = job.spec.params
    embed = _base(job, DONE_COLOUR)
    if image_url is None:
        embed.description = SPOILER_WARNING
    width, height = (
        (params.width * 2, params.height * 2)
        if job.kind is JobKind.UPSCALE
        else (
            params.width,
            params.height,
        )
    )
    embed.add_field(name="Seed", value=str(params.seed))
    embed.add_field(name="Size", value=f"{width}×{height} ({params.aspect})")
    fast = " (⚡ fast)" if job.spec.is_fast else ""
    embed.add_field(name="Steps · guidance", value=f"{params.steps} · {params.guidance:g}{fast}")
    if job.started_at and job.finished_at:
        embed.add_field(name="Time", value=f"{(job.finished_at - job.started_at).total_seconds():.1f} s")
    if job.spec.parent_job_id is not None:
        origin = f"job #{job.spec.parent_job_id}"
        embed.add_field(name="From", value=f"[{origin}]({parent_url})" if parent_url else origin)
    if image_url is not None:
        embed.set_image(url=image_url)
    return embed


def single_embed(job: Job, index: int, seed: int, *, image_url: str | None) -> discord.Embed:
    embed = result_embed(job, image_url=image_url)
    embed.set_field_at(0, name="Seed", value=str(seed))
    embed.set_footer(text=f"Image {index + 1} of job #{job.id}")
    return embed


def failed_embed(job: Job, reason: str) -> discord.Embed:
    embed = _base(job, FAILED_COLOUR)
    embed.description = (
        f"❌ Sorry, this didn't work: {truncate(reason, 1500)}\nIt doesn't count against your daily quota."
    )
    return embed


def cancelled_embed(job: Job) -> discord.Embed:
    embed = _base(job, FAILED_COLOUR)
    embed.description = "🚫 Cancelled."
    return embed


def held_embed(job: Job) -> discord.Embed:
    """A result the server's image check holds back: the member is told, nothing is shown."""
    embed = _base(job, FAILED_COLOUR)
    embed.description = (
        "🛑 The image check flagged this result, so it is held for this server's moderators to review "
        "(`/imagine-mod safety release`). It doesn't count against your daily quota."
    )
    return embed


SPOILER_WARNING = "⚠️ The image check flagged this result: it is behind a spoiler. Open it at your discretion."


def expired_embed(job: Job) -> discord.Embed:
    """A result whose images expired before it could be delivered (the bot was away that long)."""
    embed = _base(job, FAILED_COLOUR)
    embed.description = "⌛ This image expired before I could post it."
    return embed


def usage_text(usage: Usage) -> str:
    resets = discord.utils.format_dt(usage.resets_at, "R")
    if usage.daily_quota is None:
        return f"You've made {usage.used_today} jobs today; there is no daily limit here."
    return (
        f"You've used {usage.used_today} of your {usage.daily_quota} jobs today; "
        f"{usage.remaining} left. Your quota resets {resets}."
    )


def action_log_text(entries: list[ModeratorAction], total: int, page: int, page_size: int) -> str:
    """One page of the moderation log: when (Discord's own relative time), who, what, on whom."""
    if not entries:
        return (
            "Nothing in the log." if page == 1 else f"There is no page {page}; the log has {total} entries."
        )
    pages = (total + page_size - 1) // page_size
    lines = [f"**Moderation log**, page {page} of {pages} ({total} entries, newest first)"]
    for entry in entries:
        target = f" <@{entry.target_user_id}>" if entry.target_user_id is not None else ""
        details = ", ".join(f"{key}: {value}" for key, value in sorted(entry.details.items()))
        when = f"<t:{int(entry.created_at.timestamp())}:R>"
        lines.append(
            f"{when} <@{entry.moderator_id}> `{entry.action}`{target}" + (f" ({details})" if details else "")
        )
    return truncate("\n".join(lines), CONTENT_LIMIT)
