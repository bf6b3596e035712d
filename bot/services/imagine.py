"""The application service: what members can ask for, with every check, in one place.

The Discord adapter and the command line both call this; neither talks to the store or the scheduler
itself. Every request stays inside its server: a job is only seen from the guild it was made in (from
anywhere else it is answered like a job that does not exist), and a direct message is refused unless the
operator allows DMs. Checks on a new job run in order: ban, blocked words, quota, concurrency, rate limit
(last, because it spends a token). A job whose images were removed (🗑, or expired) answers every button
with what happened to them.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from bot.domain.clock import Clock
from bot.domain.errors import ImageRemoved, InvalidRequest, JobNotFound, NotAllowed
from bot.domain.events import QueueInfo
from bot.domain.jobs import Job, JobKind, JobSpec, JobState, ModelKind, RemovalReason
from bot.domain.limits import (
    RateLimiter,
    UserLimits,
    check_concurrency,
    check_quota,
    quota_day_start,
    quota_resets_at,
)
from bot.domain.members import LOCAL_USER_ID, Requester
from bot.domain.moderation import find_blocked_word
from bot.domain.params import GenerationLimits, GenerationParams, random_seed
from bot.domain.records import Admission, AdmissionFacts, GuildSettings, StoredImage
from bot.domain.requests import FAST_UNAVAILABLE, request_from_text
from bot.scheduler.scheduler import GpuScheduler
from bot.store.admission import AdmissionStore
from bot.store.jobs import JobStore
from bot.store.moderation import ModerationStore
from bot.store.retention import RemovalStore

DM_REFUSAL = "I only work in servers: use me in a channel of a server we share."


@dataclass(frozen=True)
class Usage:
    used_today: int
    daily_quota: int | None
    resets_at: datetime

    @property
    def remaining(self) -> int | None:
        return None if self.daily_quota is None else max(0, self.daily_quota - self.used_today)


class ImagineService:
    def __init__(
        self,
        jobs: JobStore,
        admission: AdmissionStore,
        scheduler: GpuScheduler,
        *,
        removals: RemovalStore,
        actions: ModerationStore,
        generation: GenerationLimits,
        user_limits: UserLimits,
        clock: Clock,
        fast_generation: GenerationLimits | None = None,
        dm_limits: UserLimits | None = None,
        blocked_words: Sequence[str] = (),
        retention_days: int = 0,
        rng: random.Random | None = None,
    ) -> None:
        """`dm_limits`: a member's limits in direct messages, where DMs are allowed (None: refused).
        `blocked_words`: the operator's, refused everywhere on top of each server's own.
        `actions`: where a moderator's removal of a member's result is logged. `retention_days`: how long
        images are kept (IMAGE_RETENTION_DAYS, 0 forever), as an expired image's buttons tell."""
        self._jobs = jobs
        self._admission = admission
        self._scheduler = scheduler
        self._removals = removals
        self._actions = actions
        self.retention_days = retention_days
        self.generation = generation
        self.fast_generation = fast_generation  # None: no fast model is configured (FAST_MODEL)
        self.user_limits = user_limits
        self.dm_limits = dm_limits
        self._blocked_words = list(blocked_words)
        self._clock = clock
        self._rate = RateLimiter(clock)
        self._rng = rng or random.Random()

    # -- requests that make a job -------------------------------------------------------------------------

    async def imagine(
        self,
        requester: Requester,
        text: str,
        *,
        negative: str | None = None,
        aspect: str | None = None,
        seed: int | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        fast: bool | None = None,
    ) -> Job:
        """A new grid. `fast`: True for the fast model, False for the full one, None for the server's
        default (also what `--fast` / `--quality` in the prompt choose)."""
        guild = await self._guild(requester)
        request = request_from_text(
            text,
            limits=self.generation_limits(guild),
            fast_limits=self.fast_limits(guild),
            fast_by_default=guild is not None and guild.fast_by_default,
            fast=fast,
            negative=negative,
            aspect=aspect,
            seed=seed,
            steps=steps,
            guidance=guidance,
            rng=self._rng,
        )
        return await self._submit(requester, JobKind.GENERATE, request.params, model=request.model)

    async def reroll(self, requester: Requester, job_id: int) -> Job:
        parent = await self._job_for(requester, job_id)
        guild = await self._guild(requester)
        self._check_may_use(requester, parent, guild)
        if parent.kind not in (JobKind.GENERATE, JobKind.REROLL, JobKind.VARIATION):
            raise InvalidRequest("Only a grid of four can be rerolled.")
        params = parent.spec.params.with_seed(random_seed(self._rng))
        kind = JobKind.VARIATION if parent.kind is JobKind.VARIATION else JobKind.REROLL
        return await self._submit(
            requester,
            kind,
            params,
            parent=parent,
            source_image_id=parent.spec.source_image_id,
            strength=parent.spec.strength,
        )

    async def vary(self, requester: Requester, job_id: int, index: int) -> Job:
        parent, image = await self._image_of(requester, job_id, index)
        guild = await self._guild(requester)
        self._check_may_use(requester, parent, guild)
        if parent.kind is JobKind.UPSCALE:
            raise InvalidRequest("Variations start from a grid image; use V1–V4 on the grid this came from.")
        params = replace(
            parent.spec.params, width=image.width, height=image.height, seed=random_seed(self._rng)
        )
        return await self._submit(
            requester,
            JobKind.VARIATION,
            params,
            parent=parent,
            source_image_id=image.id,
            strength=self.generation.variation_strength,
        )

    async def upscale(self, requester: Requester, job_id: int, index: int) -> Job:
        parent, image = await self._image_of(requester, job_id, index)
        guild = await self._guild(requester)
        self._check_may_use(requester, parent, guild)
        if parent.kind is JobKind.UPSCALE:
            raise InvalidRequest("This image is already upscaled; I can't make it any larger.")
        # The upscale keeps the image's own seed, so the added detail follows the same noise.
        params = replace(parent.spec.params, width=image.width, height=image.height, seed=image.seed)
        return await self._submit(
            requester,
            JobKind.UPSCALE,
            params,
            parent=parent,
            source_image_id=image.id,
            strength=self.generation.upscale_strength,
        )

    async def check_may_use(self, requester: Requester, job_id: int) -> Job:
        """The job, if the requester may press its buttons; NotAllowed otherwise."""
        job = await self._job_for(requester, job_id)
        self._check_may_use(requester, job, await self._guild(requester))
        return job

    async def image_for(self, requester: Requester, job_id: int, index: int) -> tuple[Job, StoredImage]:
        """One image of a finished job, for a member allowed to use it."""
        job, image = await self._image_of(requester, job_id, index)
        self._check_may_use(requester, job, await self._guild(requester))
        return job, image

    # -- requests about jobs ------------------------------------------------------------------------------

    async def cancel(self, requester: Requester, job_id: int) -> Job:
        job = await self._job_for(requester, job_id)
        if job.user_id != requester.user_id and not requester.is_moderator:
            raise NotAllowed("You can only cancel your own jobs.")
        if job.state.is_final:
            raise InvalidRequest(f"Job #{job_id} has already {_finished_words(job.state)}.")
        return await self._scheduler.cancel(job_id)

    async def delete_result(self, requester: Requester, job_id: int) -> Job:
        """Remove a finished job's images for good (🗑): its files are deleted and the job is marked deleted
        (who, when); its row stays. For the member who made it or a moderator of its server; a moderator's
        removal of someone else's result is recorded in the action log. Removing it again is no error (a
        second message showing it can be cleared the same way)."""
        job = await self._job_for(requester, job_id, removed_ok=True)
        own = requester.user_id in (job.user_id, LOCAL_USER_ID)
        if not own and not requester.is_moderator:
            raise NotAllowed("Only the member who made this image (or a moderator) can remove it.")
        if not job.state.is_final:
            raise InvalidRequest(f"Job #{job_id} isn't finished yet; cancel it instead.")
        if job.removed_reason is RemovalReason.DELETED:
            return job
        removal = await self._removals.remove_job(job_id, RemovalReason.DELETED, by=requester.user_id)
        if not own and requester.guild_id is not None:
            await self._actions.record_action(
                requester.guild_id,
                requester.user_id,
                "result.delete",
                job.user_id,
                {"job": job_id, "files": removal.files},
            )
        return removal.job

    async def my_jobs(self, requester: Requester) -> list[tuple[Job, QueueInfo | None]]:
        self._check_place(requester)
        jobs = await self._jobs.list_jobs(
            states=[JobState.QUEUED, JobState.RUNNING], user_id=requester.user_id, guild_id=requester.guild_id
        )
        return [(job, self._scheduler.queue_info(job.id)) for job in jobs]

    async def usage(self, requester: Requester) -> Usage:
        self._check_place(requester)
        now = self._clock.now()
        facts = await self._admission.admission_facts(
            requester.guild_id, requester.user_id, quota_day_start(now)
        )
        return Usage(facts.used_since, self.limits_for(facts).daily_quota, quota_resets_at(now))

    # -- limits -------------------------------------------------------------------------------------------

    def generation_limits(self, guild: GuildSettings | None) -> GenerationLimits:
        if guild is None or guild.max_steps is None:
            return self.generation
        max_steps = min(guild.max_steps, self.generation.max_steps)
        return replace(
            self.generation, max_steps=max_steps, default_steps=min(self.generation.default_steps, max_steps)
        )

    @property
    def fast_available(self) -> bool:
        return self.fast_generation is not None

    def fast_limits(self, guild: GuildSettings | None) -> GenerationLimits | None:
        """The fast model's bounds (None when there is none), under the guild's step cap like the full one."""
        fast = self.fast_generation
        if fast is None or guild is None or guild.max_steps is None:
            return fast
        max_steps = min(guild.max_steps, fast.max_steps)
        return replace(fast, max_steps=max_steps, default_steps=min(fast.default_steps, max_steps))

    def _model_of(self, parent: Job) -> ModelKind:
        """Rerolls, variations and upscales use their parent's model (its steps and guidance suit it)."""
        if parent.spec.is_fast:
            if not self.fast_available:
                raise InvalidRequest(
                    f"Job #{parent.id} was made in fast mode, which isn't set up on this bot any more."
                )
            return ModelKind.FAST
        return ModelKind.DEFAULT

    def limits_for(self, facts: AdmissionFacts) -> UserLimits:
        """The defaults, then the guild's settings, then the member's own quota."""
        limits = self.user_limits
        guild = facts.guild
        if guild is None and self.dm_limits is not None:
            limits = self.dm_limits
        if guild is not None:
            limits = UserLimits(
                rate_per_minute=guild.rate_per_minute or limits.rate_per_minute,
                burst=guild.rate_burst or limits.burst,
                max_concurrent=guild.max_concurrent or limits.max_concurrent,
                daily_quota=guild.daily_quota if guild.daily_quota is not None else limits.daily_quota,
            )
        if facts.daily_quota_override is not None:
            limits = replace(limits, daily_quota=facts.daily_quota_override)
        return limits

    async def _submit(
        self,
        requester: Requester,
        kind: JobKind,
        params: GenerationParams,
        *,
        parent: Job | None = None,
        source_image_id: int | None = None,
        strength: float | None = None,
        model: ModelKind = ModelKind.DEFAULT,
    ) -> Job:
        """Queue a job. A follow-up (`parent` given) always uses its parent's model."""
        self._check_place(requester)
        if parent is not None:
            model = self._model_of(parent)
        if model is ModelKind.FAST and not self.fast_available:
            raise InvalidRequest(FAST_UNAVAILABLE, field="fast")
        spec = JobSpec(
            kind=kind,
            user_id=requester.user_id,
            params=params,
            guild_id=requester.guild_id,
            channel_id=requester.channel_id,
            parent_job_id=parent.id if parent else None,
            source_image_id=source_image_id,
            strength=strength,
            model=model,
        )
        admission = None
        took_token = False

        def admit(facts: AdmissionFacts) -> None:
            nonlocal took_token
            self._admit(requester, params, facts)
            took_token = True  # the rate-limit token is taken last, once every check has passed

        if requester.user_id != LOCAL_USER_ID:  # the operator at the command line has no limits
            admission = Admission(quota_day_start(self._clock.now()), admit)
        try:
            job = await self._jobs.create_job(spec, admit=admission)
        except Exception:
            # The checks passed but no job was stored (a lost database, say): give the token back.
            if took_token:
                self._rate.refund(requester.guild_id, requester.user_id)
            raise
        self._scheduler.submit(job)
        return job

    def _admit(self, requester: Requester, params: GenerationParams, facts: AdmissionFacts) -> None:
        """The checks, in order; run by the store inside the transaction that creates the job."""
        if facts.banned:
            raise NotAllowed("You can't use the image bot on this server. Ask a moderator if unsure.")
        text = f"{params.prompt} {params.negative_prompt}"
        if (word := find_blocked_word(text, facts.blocked_words)) is not None:
            raise NotAllowed(f"Your prompt contains “{word}”, which isn't allowed on this server.")
        if (word := find_blocked_word(text, self._blocked_words)) is not None:
            raise NotAllowed(f"Your prompt contains “{word}”, which this bot doesn't allow.")
        limits = self.limits_for(facts)
        if not requester.is_moderator:
            check_quota(facts.used_since, limits, self._clock.now())
        check_concurrency(facts.active_jobs, limits)
        self._rate.acquire(requester.guild_id, requester.user_id, limits)

    def _check_place(self, requester: Requester) -> None:
        """Direct messages are refused unless the operator allows them (the command line is no DM)."""
        if requester.guild_id is None and requester.user_id != LOCAL_USER_ID and self.dm_limits is None:
            raise NotAllowed(DM_REFUSAL)

    async def _job_for(self, requester: Requester, job_id: int, *, removed_ok: bool = False) -> Job:
        """The job, seen from where the requester asks. A job of another server (or of DMs, from a
        server) is answered like one that does not exist: job numbers are sequential and shown. A job
        whose images were removed raises ImageRemoved, unless `removed_ok`."""
        self._check_place(requester)
        job = await self._jobs.get_job(job_id)
        if requester.user_id != LOCAL_USER_ID and job.spec.guild_id != requester.guild_id:
            raise JobNotFound(job_id)
        if job.removed_reason is not None and not removed_ok:
            raise ImageRemoved(job_id, job.removed_reason.value, self.retention_days)
        return job

    async def _guild(self, requester: Requester) -> GuildSettings | None:
        if requester.guild_id is None:
            return None
        settings, _ = await self._admission.guild_rules(requester.guild_id)
        return settings

    def _check_may_use(self, requester: Requester, job: Job, guild: GuildSettings | None) -> None:
        if requester.user_id in (job.user_id, LOCAL_USER_ID) or requester.is_moderator:
            return
        if guild is not None and guild.buttons_for_everyone:
            return
        raise NotAllowed("Only the member who made this image (or a moderator) can use its buttons.")

    async def _image_of(self, requester: Requester, job_id: int, index: int) -> tuple[Job, StoredImage]:
        job = await self._job_for(requester, job_id)
        images = await self._jobs.job_images(job_id)
        if not 0 <= index < len(images):
            raise InvalidRequest(f"Job #{job_id} has no image {index + 1}.")
        return job, images[index]


def _finished_words(state: JobState) -> str:
    return {
        JobState.SUCCEEDED: "finished",
        JobState.FAILED: "failed",
        JobState.CANCELLED: "been cancelled",
    }.get(state, state.value)
