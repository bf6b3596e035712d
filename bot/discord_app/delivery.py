"""Keeping each job's message up to date, and delivering its result exactly once.

Every job made from Discord has one *status message*: the interaction's original response (edited through
the interaction webhook while its 15-minute token lives) or, for jobs made by a reaction, a message the bot
posted in the channel. The manager edits it with the queue position and a progress bar, at most every
`EDIT_INTERVAL` seconds, and finally with the result:

1. the status message edited into the result (idempotent: editing twice shows the same message);
2. when the token has expired or the edit fails: a new channel message that mentions the member;
3. when the channel is gone or closed to the bot: a DM.

"Exactly once" rests on the store: a delivery is marked done after it succeeded, and a result not yet
marked is delivered again after a restart. The one window that could post twice (a new message sent, the
process killed before it was marked) is closed by writing `attempted_at` first and, on retry, looking for
the bot's own message for that job in the channel before sending another.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any

import discord

from bot.discord_app import presenters
from bot.discord_app.components import cancel_view, grid_view, upscale_view
from bot.domain.clock import Clock
from bot.domain.events import JobUpdate, job_fields, seconds_between
from bot.domain.jobs import Job, JobKind, JobState, RemovalReason
from bot.domain.records import Delivery, DeliveryTarget
from bot.domain.safety import Shown
from bot.services.results import ResultService
from bot.services.safety import SafetyService
from bot.utils.imaging import compose_grid, encode_for_upload

log = logging.getLogger(__name__)

EDIT_INTERVAL = 2.0  # seconds between edits of one message: well inside Discord's rate limits
TOKEN_LIFETIME = timedelta(minutes=15)
TOKEN_MARGIN = timedelta(seconds=30)  # stop using a token a little before Discord does
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024
SWEEP_SECONDS = 10.0  # how often finished but undelivered results are looked for
RETRY_DELAYS = (1.0, 5.0, 30.0, 120.0)  # Discord outages: try again, then leave it for the next start


class DeliveryManager:
    def __init__(
        self,
        client: discord.Client,
        results: ResultService,
        safety: SafetyService,
        clock: Clock,
        *,
        edit_interval: float = EDIT_INTERVAL,
    ) -> None:
        self._client = client
        self._results = results
        self._safety = safety
        self._clock = clock
        self._edit_interval = edit_interval
        self._latest: dict[int, JobUpdate] = {}  # job id -> newest progress not yet shown
        self._last_edit: dict[int, float] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._refresher: asyncio.Task[None] | None = None
        # Told each job id whose result was delivered (metrics: time from done to delivered).
        self.on_delivered: Callable[[int], None] | None = None

    async def start(self) -> None:
        """Listen to the scheduler and deliver whatever finished while the bot was down."""
        self._results.follow(self._on_update)
        self._refresher = asyncio.create_task(self._refresh_loop(), name="status-refresh")
        for delivery in await self._results.undelivered_results():
            self._spawn(self.deliver(delivery.job_id))
        for delivery in await self._results.waiting_deliveries():
            self._latest[delivery.job_id] = JobUpdate(delivery.job_id, JobState.QUEUED)

    async def stop(self) -> None:
        if self._refresher is None:
            return  # never started: the bot stopped before setup (a refused login, say)
        self._results.unfollow(self._on_update)
        tasks = [task for task in (self._refresher, *self._tasks) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def track(
        self,
        job: Job,
        *,
        channel_id: int,
        message_id: int | None,
        interaction: discord.Interaction[Any] | None = None,
    ) -> None:
        """Remember where a new job's status lives. It is stored before anything else can fail, so a
        job is never left without a way to deliver it (without a status message, it is posted)."""
        token = expires = None
        upload_limit = DEFAULT_UPLOAD_LIMIT
        if interaction is not None:
            token = interaction.token
            expires = interaction.created_at + TOKEN_LIFETIME - TOKEN_MARGIN
            upload_limit = getattr(interaction, "filesize_limit", None) or upload_limit
        await self._results.track(
            job.id, DeliveryTarget(channel_id, message_id, token, expires, upload_limit)
        )
        current = await self._results.job(job.id)
        if current.state.is_final:
            await self.deliver(job.id)  # it finished before we got here
        else:
            self._latest[job.id] = JobUpdate(job.id, current.state)

    # -- progress ------------------------------------------------------------------------------------------

    def _on_update(self, update: JobUpdate) -> None:
        if update.state.is_final:
            self._latest.pop(update.job_id, None)
            self._spawn(self.deliver(update.job_id))
        else:
            self._latest[update.job_id] = update

    async def _refresh_loop(self) -> None:
        sweep_at = self._clock.monotonic() + SWEEP_SECONDS
        while True:
            await asyncio.sleep(min(1.0, self._edit_interval / 2))
            now = self._clock.monotonic()
            if now >= sweep_at:
                # A safety net for results this process heard nothing of (made by another worker for a
                # job it never saw queued): whatever is finished and undelivered goes out now.
                sweep_at = now + SWEEP_SECONDS
                with contextlib.suppress(Exception):
                    for delivery in await self._results.undelivered_results():
                        self._spawn(self.deliver(delivery.job_id))
                    await self._results.forget_expired_tokens()
            for job_id, update in list(self._latest.items()):
                if now - self._last_edit.get(job_id, -1e9) >= self._edit_interval:
                    await self._show_status(job_id, update)

    async def _show_status(self, job_id: int, update: JobUpdate) -> None:
        """Edit the status message with the queue position or progress; skipped once the token expired."""
        async with self._lock(job_id):
            delivery = await self._results.delivery(job_id)
            if delivery is None or delivery.delivered_at is not None:
                self._latest.pop(job_id, None)
                return
            job = await self._results.job(job_id)
            if job.state.is_final:
                return
            if update.state is JobState.RUNNING and update.total_steps:
                embed = presenters.progress_embed(job, update)
            else:
                embed = presenters.queued_embed(job, self._results.queue_info(job_id))
            self._last_edit[job_id] = self._clock.monotonic()
            if self._latest.get(job_id) == update:
                del self._latest[job_id]
            try:
                await self._edit_status(delivery, embed=embed, view=cancel_view(job_id))
            except (discord.HTTPException, _NoStatusMessage) as error:
                log.info("could not update the status message", extra={"job_id": job_id, "error": str(error)})

    # -- the result ----------------------------------------------------------------------------------------

    async def deliver(self, job_id: int) -> None:
        """Deliver a finished job's outcome once, retrying through Discord outages."""
        for attempt, delay in enumerate((0.0, *RETRY_DELAYS)):
            await asyncio.sleep(delay)
            try:
                await self._deliver_once(job_id)
                return
            except (TimeoutError, discord.DiscordServerError, OSError) as error:
                log.warning(
                    "delivery failed; will retry",
                    extra={"job_id": job_id, "attempt": attempt, "error": str(error)},
                )
        log.error("delivery gave up for now; it is retried at the next start", extra={"job_id": job_id})

    async def _deliver_once(self, job_id: int) -> None:
        async with self._lock(job_id):
            delivery = await self._results.delivery(job_id)
            if delivery is None or delivery.delivered_at is not None:
                return
            job = await self._results.job(job_id)
            if not job.state.is_final:
                return
            if job.removed_reason is RemovalReason.DELETED:
                # Removed with 🗑 before it went out (a forged press): its messages went with it.
                await self._results.mark_delivered(job_id, channel_id=None, message_id=None)
                return
            message = await self._compose(job, delivery)
            delivered = await self._send(job, delivery, message)
            if delivered is not None and job.state is JobState.SUCCEEDED and job.kind is not JobKind.UPSCALE:
                # So that a reaction on the grid can be traced back to its job.
                await self._results.record_message(delivered.id, delivered.channel.id, job.id, None)
            await self._results.mark_delivered(
                job_id,
                channel_id=delivered.channel.id if delivered else None,
                message_id=delivered.id if delivered else None,
            )
            if delivered is not None:
                log.info(
                    "job delivered",
                    extra={
                        **job_fields(job),
                        "state": job.state.value,
                        "channel": delivered.channel.id,
                        "message_id": delivered.id,
                        "since_done": seconds_between(job.finished_at, self._clock.now()),
                    },
                )
            if delivered is not None and self.on_delivered is not None:
                self.on_delivered(job_id)
            self._last_edit.pop(job_id, None)
            self._locks.pop(job_id, None)

    async def _compose(self, job: Job, delivery: Delivery) -> _Outgoing:
        if job.state is JobState.FAILED:
            return _Outgoing(embed=presenters.failed_embed(job, job.error or "unknown error"))
        if job.state is JobState.CANCELLED:
            return _Outgoing(embed=presenters.cancelled_embed(job))
        if job.is_removed:  # expired (IMAGE_RETENTION_DAYS) while undelivered: the bot was away that long
            return _Outgoing(embed=presenters.expired_embed(job))
        shown = await self._safety.decide(
            job, age_restricted_channel=self.age_restricted(delivery.channel_id)
        )
        if shown is Shown.HELD:
            return _Outgoing(embed=presenters.held_embed(job))
        images = await self._results.images(job.id)
        upload_limit = delivery.upload_limit

        def encode() -> tuple[bytes, str]:
            # In a thread: a grid of four 1024² images is a 2048² paste and a PNG encode.
            picture = images[0] if job.kind is JobKind.UPSCALE else compose_grid(images)
            return encode_for_upload(picture, upload_limit)

        data, extension = await asyncio.to_thread(encode)
        spoiler = shown is Shown.SPOILER
        filename = f"{'SPOILER_' if spoiler else ''}imagine-{job.id}.{extension}"
        parent_url = None
        if job.spec.parent_job_id is not None:
            parent = await self._results.delivery(job.spec.parent_job_id)
            if parent is not None and parent.result_message_id and parent.result_channel_id:
                parent_url = _jump_url(job.spec.guild_id, parent.result_channel_id, parent.result_message_id)
        image_url = None if spoiler else f"attachment://{filename}"
        embed = presenters.result_embed(job, image_url=image_url, parent_url=parent_url)
        view = upscale_view(job.id) if job.kind is JobKind.UPSCALE else grid_view(job.id)
        return _Outgoing(embed=embed, view=view, file_data=data, filename=filename)

    def age_restricted(self, channel_id: int) -> bool:
        """Whether the channel is marked age-restricted (NSFW); a DM or a channel not in the cache is not."""
        channel = self._client.get_channel(channel_id)
        is_nsfw = getattr(channel, "is_nsfw", None)
        return bool(is_nsfw()) if callable(is_nsfw) else False

    async def post_released(self, job_id: int) -> discord.Message | None:
        """Post a result a moderator released (or a re-check cleared) in its channel, as a new message."""
        job = await self._results.job(job_id)
        delivery = await self._results.delivery(job_id)
        if delivery is None:
            return None
        outgoing = await self._compose(job, delivery)
        channel = self._client.get_partial_messageable(delivery.channel_id)
        posted = await channel.send(
            content=f"<@{job.user_id}> a moderator released your image:",
            embed=outgoing.embed,
            view=outgoing.view or discord.utils.MISSING,
            files=outgoing.files(),
            allowed_mentions=discord.AllowedMentions(users=True),
        )
        await self._results.record_message(posted.id, posted.channel.id, job.id, None)
        return posted

    async def _send(self, job: Job, delivery: Delivery, outgoing: _Outgoing) -> discord.Message | None:
        mention = f"<@{job.user_id}>"
        if delivery.attempted_at is None:
            try:
                return await self._edit_status(
                    delivery,
                    embed=outgoing.embed,
                    view=outgoing.view,
                    attachments=outgoing.files(),
                    content=mention,
                )
            except discord.DiscordServerError:
                raise  # Discord is down: retry later, the same way
            except (discord.HTTPException, _NoStatusMessage) as error:
                # Token expired (401 50027), message deleted (404), no access (403): post a new message.
                log.info(
                    "status message not editable; posting instead",
                    extra={"job_id": job.id, "error": str(error)},
                )
        else:
            found = await self._find_posted(job.id, delivery)
            if found is not None:
                return found
        await self._results.mark_attempted(job.id)
        done = "your images are ready" if job.state is JobState.SUCCEEDED else "about your image request"
        content = f"{mention} {done}:"
        channel = self._client.get_partial_messageable(delivery.channel_id)
        try:
            return await channel.send(
                content=content,
                embed=outgoing.embed,
                view=outgoing.view or discord.utils.MISSING,
                files=outgoing.files(),
                allowed_mentions=discord.AllowedMentions(users=True),
            )
        except (discord.NotFound, discord.Forbidden) as error:
            log.info("channel closed to the bot; sending a DM", extra={"job_id": job.id, "error": str(error)})
        try:
            user = await self._client.fetch_user(job.user_id)
            return await user.send(
                content=f"I couldn't post in the channel, so here it is: job #{job.id}",
                embed=outgoing.embed,
                view=outgoing.view or discord.utils.MISSING,
                files=outgoing.files(),
            )
        except (discord.NotFound, discord.Forbidden) as error:
            log.warning("could not deliver anywhere", extra={"job_id": job.id, "error": str(error)})
            return None

    async def _edit_status(
        self,
        delivery: Delivery,
        *,
        embed: discord.Embed,
        view: discord.ui.View | None,
        attachments: list[discord.File] | None = None,
        content: str | None = None,
    ) -> discord.Message:
        if delivery.message_id is None:
            raise _NoStatusMessage("no status message")
        edit: dict[str, Any] = {"embed": embed, "view": view}
        if attachments is not None:
            edit["attachments"] = attachments
        if content is not None:
            edit["content"] = content
        if delivery.interaction_token is None and delivery.token_expires_at is not None:
            # An interaction's response whose token was cleared (expired, or done with): only that token
            # could edit it.
            raise _NoStatusMessage("the interaction token has expired")
        if delivery.interaction_token is not None:
            if delivery.token_expires_at is None or self._clock.now() >= delivery.token_expires_at:
                raise _NoStatusMessage("the interaction token has expired")
            application_id = self._client.application_id
            if application_id is None:
                raise _NoStatusMessage("the application id is not known yet")
            webhook = discord.Webhook.partial(application_id, delivery.interaction_token, client=self._client)
            return await webhook.edit_message(delivery.message_id, **edit)
        channel = self._client.get_partial_messageable(delivery.channel_id)
        return await channel.get_partial_message(delivery.message_id).edit(**edit)

    async def _find_posted(self, job_id: int, delivery: Delivery) -> discord.Message | None:
        """The bot's own message for this job, if a send went through before a crash.

        The status message is left out: it carries the job's footer too, and when it is recent (a quick
        job whose edit failed) it would be taken for the result, which would then never be posted.
        """
        if delivery.attempted_at is None or self._client.user is None:
            return None
        bot_id = self._client.user.id
        marker = f"job #{job_id}"
        channel = self._client.get_partial_messageable(delivery.channel_id)
        since = delivery.attempted_at - timedelta(seconds=5)
        try:
            async for message in channel.history(limit=50, after=since):
                footers = [embed.footer.text or "" for embed in message.embeds]
                if message.id == delivery.message_id or message.author.id != bot_id:
                    continue
                if any(footer.endswith(marker) for footer in footers):
                    return message
        except discord.DiscordServerError:
            # Not knowing is not "not posted": posting now could make a second copy. Retry later.
            raise
        except discord.HTTPException as error:
            log.info("could not read the channel's history", extra={"job_id": job_id, "error": str(error)})
        return None

    def _lock(self, job_id: int) -> asyncio.Lock:
        return self._locks.setdefault(job_id, asyncio.Lock())

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_log_failure)


class _NoStatusMessage(Exception):
    """The status message cannot be edited (none, or its token expired)."""


class _Outgoing:
    def __init__(
        self,
        *,
        embed: discord.Embed,
        view: discord.ui.View | None = None,
        file_data: bytes | None = None,
        filename: str | None = None,
    ) -> None:
        self.embed = embed
        self.view = view
        self._data = file_data
        self._filename = filename

    def files(self) -> list[discord.File]:
        """Fresh File objects each time: discord.py consumes them when a request is sent."""
        if self._data is None or self._filename is None:
            return []
        return [discord.File(io.BytesIO(self._data), filename=self._filename)]


def _jump_url(guild_id: int | None, channel_id: int, message_id: int) -> str:
    return f"https://discord.com/channels/{guild_id or '@me'}/{channel_id}/{message_id}"


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("a delivery task failed", exc_info=task.exception())
