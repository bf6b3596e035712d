"""Member commands and buttons: /imagine, /queue, /cancel, /usage, U/V/🔄/🗑 buttons and reactions."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import discord
from discord import app_commands
from discord.ext import commands

from bot.discord_app import presenters
from bot.discord_app.components import cancel_view, single_view
from bot.discord_app.delivery import DEFAULT_UPLOAD_LIMIT
from bot.domain.errors import ImagineError, InvalidRequest
from bot.domain.jobs import Job
from bot.domain.members import Requester
from bot.domain.params import ASPECT_CHOICES, MAX_SEED
from bot.domain.refusals import RefusalReplies, Reply
from bot.domain.safety import Shown
from bot.services.imagine import ImagineService
from bot.utils.imaging import encode_for_upload

if TYPE_CHECKING:
    from bot.discord_app.client import ImagineBot

log = logging.getLogger(__name__)

ANSWER_WITHIN = 2.0  # seconds to decide before deferring: Discord's deadline is 3
REFUSAL_SECONDS = 30.0  # how long a note saying why a reaction did nothing stays
OUTAGE_DELAYS = (1.0, 5.0)  # pauses before trying a request again that Discord answered 5xx

T = TypeVar("T")

VARIATION_EMOJIS = {"1️⃣": 0, "2️⃣": 1, "3️⃣": 2, "4️⃣": 3}
SINGLE_VARIATION_EMOJI = "🔁"


def requester(user: discord.User | discord.Member, guild_id: int | None, channel_id: int | None) -> Requester:
    """Who is asking; moderators are members with Manage Server (or Administrator) here."""
    permissions = user.guild_permissions if isinstance(user, discord.Member) else None
    return Requester(
        user_id=user.id,
        guild_id=guild_id,
        channel_id=channel_id,
        is_moderator=bool(permissions and (permissions.manage_guild or permissions.administrator)),
    )


def requester_of(interaction: discord.Interaction[Any]) -> Requester:
    return requester(interaction.user, interaction.guild_id, interaction.channel_id)


class ImagineCog(commands.Cog):
    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot
        # Server commands: offered in servers only, and in DMs with the bot only where the operator
        # allows them (ALLOW_DMS). An interaction that still comes from a DM is refused by the service.
        contexts = app_commands.AppCommandContext(guild=True, dm_channel=bot.app.settings.allow_dms)
        for command in self.__cog_app_commands__:
            command.allowed_contexts = contexts
        self._refusals = RefusalReplies(bot.clock)

    @property
    def service(self) -> ImagineService:
        return self.bot.app.service

    # -- /imagine ---------------------------------------------------------------------------------------

    @app_commands.command(name="imagine", description="Make four images from a prompt")
    @app_commands.describe(
        prompt="What to draw. Flags work too: --ar 16:9 --seed 42 --no text --steps 30 --guidance 6 --fast",
        negative="What to keep out of the image",
        aspect="Aspect ratio (snapped to a size the model was trained on)",
        seed="Seed of the first image, to make it again",
        fast="Few-step fast model (True) or the full model (False); default: the server's choice",
    )
    @app_commands.choices(aspect=[app_commands.Choice(name=ratio, value=ratio) for ratio in ASPECT_CHOICES])
    async def imagine(
        self,
        interaction: discord.Interaction[Any],
        prompt: app_commands.Range[str, 1, 2000],
        negative: app_commands.Range[str, 0, 1000] | None = None,
        aspect: app_commands.Choice[str] | None = None,
        seed: app_commands.Range[int, 0, MAX_SEED] | None = None,
        fast: bool | None = None,
    ) -> None:
        requester = requester_of(interaction)
        await self._start_job(
            interaction,
            lambda: self.service.imagine(
                requester,
                prompt,
                negative=negative,
                aspect=aspect.value if aspect else None,
                seed=seed,
                fast=fast,
            ),
        )

    # -- /queue, /cancel, /usage ---------------------------------------------------------------------------

    @app_commands.command(name="queue", description="Your jobs waiting or running, with their place and ETA")
    async def queue(self, interaction: discord.Interaction[Any]) -> None:
        jobs = await self.service.my_jobs(requester_of(interaction))
        if not jobs:
            await interaction.response.send_message("You have no jobs waiting or running.", ephemeral=True)
            return
        lines = []
        for job, info in jobs:
            prompt = presenters.truncate(job.spec.params.prompt, 60)
            if info is None or info.position == 0:
                where = "running now"
            else:
                where = f"#{info.position} in line, {presenters.duration_words(info.eta_seconds)}"
            lines.append(f"**#{job.id}** {presenters.KIND_WORDS[job.kind]} “{prompt}”: {where}")
        await interaction.response.send_message("\n".join(lines)[: presenters.CONTENT_LIMIT], ephemeral=True)

    @app_commands.command(name="cancel", description="Cancel one of your jobs (the newest if you don't say)")
    @app_commands.describe(job="The job number (shown in /queue and under each image)")
    async def cancel_command(self, interaction: discord.Interaction[Any], job: int | None = None) -> None:
        requester = requester_of(interaction)
        if job is None:
            mine = await self.service.my_jobs(requester)
            if not mine:
                raise InvalidRequest("You have no jobs waiting or running.")
            job = mine[-1][0].id
        cancelled = await self.service.cancel(requester, job)
        await interaction.response.send_message(f"Cancelled job #{cancelled.id}.", ephemeral=True)

    @app_commands.command(name="usage", description="How many jobs you have left today")
    async def usage(self, interaction: discord.Interaction[Any]) -> None:
        usage = await self.service.usage(requester_of(interaction))
        await interaction.response.send_message(presenters.usage_text(usage), ephemeral=True)

    # Errors of these commands are answered once, by ImagineTree.on_error (a cog handler would answer twice).

    # -- buttons (called by the DynamicItems in components.py) ---------------------------------------------

    async def show_single(self, interaction: discord.Interaction[Any], job_id: int, index: int) -> None:
        requester = requester_of(interaction)
        job, image = await self.service.image_for(requester, job_id, index)
        age_restricted = self.bot.delivery.age_restricted(interaction.channel_id or 0)
        shown = await self.bot.app.safety.shown(
            job, [image.safety_score], age_restricted_channel=age_restricted
        )
        if shown is Shown.HELD:
            raise InvalidRequest(
                "The image check flagged this image; it is held for the moderators to review."
            )
        await interaction.response.defer(thinking=True)
        picture = await self.bot.app.results.image(image.id)
        limit = getattr(interaction, "filesize_limit", None) or DEFAULT_UPLOAD_LIMIT
        data, extension = await asyncio.to_thread(encode_for_upload, picture, limit)
        spoiler = shown is Shown.SPOILER
        filename = f"{'SPOILER_' if spoiler else ''}imagine-{job.id}-{index + 1}.{extension}"
        image_url = None if spoiler else f"attachment://{filename}"
        embed = presenters.single_embed(job, index, image.seed, image_url=image_url)
        message = await interaction.edit_original_response(
            embed=embed,
            attachments=[discord.File(io.BytesIO(data), filename=filename)],
            view=single_view(job.id, index),
        )
        await self.bot.app.results.record_message(message.id, message.channel.id, job.id, index)

    async def vary(self, interaction: discord.Interaction[Any], job_id: int, index: int) -> None:
        requester = requester_of(interaction)
        await self.service.check_may_use(requester, job_id)
        await self._start_job(interaction, lambda: self.service.vary(requester, job_id, index))

    async def upscale(self, interaction: discord.Interaction[Any], job_id: int, index: int) -> None:
        requester = requester_of(interaction)
        await self.service.check_may_use(requester, job_id)
        await self._start_job(interaction, lambda: self.service.upscale(requester, job_id, index))

    async def reroll(self, interaction: discord.Interaction[Any], job_id: int) -> None:
        requester = requester_of(interaction)
        await self.service.check_may_use(requester, job_id)
        await self._start_job(interaction, lambda: self.service.reroll(requester, job_id))

    async def cancel(self, interaction: discord.Interaction[Any], job_id: int) -> None:
        cancelled = await self.service.cancel(requester_of(interaction), job_id)
        await interaction.response.send_message(f"Cancelled job #{cancelled.id}.", ephemeral=True)

    async def delete_result(self, interaction: discord.Interaction[Any], job_id: int) -> None:
        """🗑: the service deletes the job's images (or refuses, privately); then every message of the
        bot's that shows the job goes, the one pressed first. A message already gone is fine."""
        job = await self.service.delete_result(requester_of(interaction), job_id)
        await interaction.response.send_message(f"🗑 Removed the images of job #{job.id}.", ephemeral=True)
        messages = await self.bot.app.results.messages_of(job.id)
        if interaction.message is not None and interaction.channel_id is not None:
            messages.insert(0, (interaction.channel_id, interaction.message.id))
        for channel_id, message_id in dict.fromkeys(messages):
            channel = self.bot.get_partial_messageable(channel_id, guild_id=interaction.guild_id)
            try:
                await _through_outages(channel.get_partial_message(message_id).delete)
            except discord.NotFound:
                pass  # deleted already (by someone, or with its channel)
            except discord.HTTPException as error:
                log.warning(
                    "could not delete a removed job's message",
                    extra={"job_id": job.id, "message_id": message_id, "error": str(error)},
                )

    async def _start_job(
        self, interaction: discord.Interaction[Any], make: Callable[[], Awaitable[Job]]
    ) -> None:
        """Queue a job and answer inside Discord's 3 seconds.

        Checks take milliseconds, so a refusal is normally shown to the member alone (ephemeral) and an
        accepted job answers with its queue status. Should the checks be slow (a busy database), the
        interaction is deferred before the deadline and the outcome edited in.
        """
        pending = asyncio.ensure_future(make())
        try:
            job = await asyncio.wait_for(asyncio.shield(pending), timeout=ANSWER_WITHIN)
        except ImagineError as error:
            await interaction.response.send_message(str(error), ephemeral=True)
            return
        except TimeoutError:
            answer = await _first_answer(interaction, interaction.response.defer(thinking=True))
            try:
                job = await pending
            except ImagineError as error:
                if answer is not None:  # else Discord already shows "The application did not respond"
                    await interaction.edit_original_response(content=f"❌ {error}")
                return
        else:
            info = self.bot.app.results.queue_info(job.id)
            answer = await _first_answer(
                interaction,
                interaction.response.send_message(
                    embed=presenters.queued_embed(job, info), view=cancel_view(job.id)
                ),
            )
        await self.bot.delivery.track(
            job,
            channel_id=interaction.channel_id or 0,
            message_id=answer.message_id if answer else None,
            interaction=interaction,
        )

    # -- reactions ------------------------------------------------------------------------------------------

    @commands.Cog.listener()
    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        """1️⃣–4️⃣ on a grid, or 🔁 on a single image, asks for variations of that image."""
        if payload.member is None or payload.member.bot or payload.guild_id is None:
            return
        emoji = str(payload.emoji)
        if emoji not in VARIATION_EMOJIS and emoji != SINGLE_VARIATION_EMOJI:
            return
        target = await self.bot.app.results.message_target(payload.message_id)
        if target is None:
            return
        job_id, shown_index = target
        if shown_index is None:
            index = VARIATION_EMOJIS.get(emoji)
        else:
            index = shown_index if emoji == SINGLE_VARIATION_EMOJI else None
        if index is None:
            return
        reacting = requester(payload.member, payload.guild_id, payload.channel_id)
        channel = self.bot.get_partial_messageable(payload.channel_id, guild_id=payload.guild_id)
        reference = discord.MessageReference(
            message_id=payload.message_id, channel_id=payload.channel_id, fail_if_not_exists=False
        )
        mention = payload.member.mention
        try:
            job = await self.service.vary(reacting, job_id, index)
        except ImagineError as error:
            reply = self._refusals.reply_for(payload.member.id, payload.message_id)
            if reply is Reply.PUBLIC:
                await _refuse(channel, f"{mention} {error}", reference)
            elif reply is Reply.PRIVATE:
                await _refuse_privately(payload.member, str(error))
            return
        try:
            status: discord.Message | None = await channel.send(
                f"{mention} variations of image {index + 1} coming up.",
                reference=reference,
                allowed_mentions=discord.AllowedMentions(users=True),
            )
        except discord.HTTPException as error:
            # The job is queued already: without its status note, its result is posted as a new message
            # (a 503 here, which discord.py does not retry, used to lose the job's result altogether).
            log.warning(
                "could not post a reaction's status note; the result will be posted instead",
                extra={"job_id": job.id, "error": str(error)},
            )
            status = None
        await self.bot.delivery.track(
            job, channel_id=payload.channel_id, message_id=status.id if status is not None else None
        )


async def _first_answer(
    interaction: discord.Interaction[Any],
    answer: Awaitable[discord.InteractionCallbackResponse[Any] | None],
) -> discord.InteractionCallbackResponse[Any] | None:
    """The first answer to an interaction whose job is queued already, or None when it never landed.

    It fails for good when Discord answers 5xx past discord.py's retries, or when those retries (1 s, then
    3 s) outlast the 3 s Discord allows (404 Unknown interaction). The job must not be lost with it: tracked
    without a status message, its result is posted in the channel with a mention. Meanwhile the member sees
    Discord's own "The application did not respond"; nothing more can be said through the interaction.
    """
    try:
        return await answer
    except discord.HTTPException as error:
        log.warning(
            "could not answer an interaction; its result will be posted in the channel",
            extra={"interaction_id": interaction.id, "error": str(error)},
        )
        return None


async def _refuse(
    channel: discord.PartialMessageable, text: str, reference: discord.MessageReference
) -> None:
    """Tell a member why their reaction did nothing, in a note removed after `REFUSAL_SECONDS`.

    discord.py raises at once on a 503 (and its `delete_after` swallows every error), so posting the note
    and removing it are both tried again through a short outage.
    """
    try:
        note = await _through_outages(
            lambda: channel.send(
                text, reference=reference, allowed_mentions=discord.AllowedMentions(users=True)
            )
        )
        await asyncio.sleep(REFUSAL_SECONDS)
        await _through_outages(note.delete)
    except discord.NotFound:
        pass  # removed already, by a moderator or with its channel
    except discord.HTTPException as error:
        log.info("could not show or remove a reaction's refusal", extra={"error": str(error)})


async def _refuse_privately(member: discord.Member, text: str) -> None:
    """The same answer by DM, for a member who already had a public one this minute (quietly dropped
    when their DMs are closed)."""
    try:
        await member.send(f"Your reaction did nothing: {text}")
    except discord.HTTPException as error:
        log.info("could not DM a reaction's refusal", extra={"error": str(error)})


async def _through_outages(call: Callable[[], Awaitable[T]]) -> T:
    """`call()`, tried again after each of `OUTAGE_DELAYS` while Discord answers 5xx."""
    for delay in OUTAGE_DELAYS:
        try:
            return await call()
        except discord.DiscordServerError as error:
            log.info("Discord answered %s; trying again in %g s", error.status, delay)
            await asyncio.sleep(delay)
    return await call()


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(ImagineCog(bot))
