"""Output safety: how each result is shown under its server's policy, and what moderators can do about it
(choose the mode and threshold, release a held result, re-check one). The scores themselves are made by
the scheduler's classifier before anything is stored (bot/domain/safety.py has the policy)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from bot.domain.errors import InvalidRequest, JobNotFound
from bot.domain.jobs import Job, JobState
from bot.domain.members import Requester
from bot.domain.records import GuildSettingsChanges
from bot.domain.render import ImageClassifier
from bot.domain.safety import SafetyMode, SafetyPolicy, Shown
from bot.services.moderation import check_moderator
from bot.store.admission import AdmissionStore
from bot.store.jobs import JobStore
from bot.store.moderation import ModerationStore
from bot.store.safety import SafetyStore


class SafetyService:
    def __init__(
        self,
        jobs: JobStore,
        store: SafetyStore,
        admission: AdmissionStore,
        moderation: ModerationStore,
        *,
        default: SafetyPolicy,
        classifier: ImageClassifier | None = None,
    ) -> None:
        """`default`: the operator's SAFETY_MODE and SAFETY_THRESHOLD, for servers that set none.
        `classifier`: for re-checks in this process (None where it renders nothing: stored scores are
        judged again instead)."""
        self._jobs = jobs
        self._store = store
        self._admission = admission
        self._moderation = moderation
        self.default = default
        self._classifier = classifier

    async def policy(self, guild_id: int | None) -> SafetyPolicy:
        """The server's mode and threshold, each falling back to the operator's."""
        if guild_id is None:
            return self.default
        settings, _ = await self._admission.guild_rules(guild_id)
        return SafetyPolicy(
            SafetyMode(settings.safety_mode) if settings.safety_mode else self.default.mode,
            settings.safety_threshold or self.default.threshold,
        )

    async def decide(self, job: Job, *, age_restricted_channel: bool) -> Shown:
        """How the job's result is shown in its channel; the decision is stored with the job."""
        shown = await self.shown(job, await self.scores(job), age_restricted_channel=age_restricted_channel)
        await self._store.record_shown(job.id, shown.value)
        return shown

    async def shown(self, job: Job, scores: Sequence[float | None], *, age_restricted_channel: bool) -> Shown:
        """How images of this job with these scores are shown (one image of a grid, or all of them)."""
        policy = await self.policy(job.spec.guild_id)
        released = job.released_at is not None
        return policy.shown(scores, age_restricted_channel=age_restricted_channel, released=released)

    async def scores(self, job: Job) -> list[float | None]:
        return [image.safety_score for image in await self._jobs.job_images(job.id)]

    # -- moderators -----------------------------------------------------------------------------------

    async def change_policy(
        self, moderator: Requester, mode: SafetyMode | None, threshold: float | None
    ) -> SafetyPolicy:
        """Change the server's mode and/or threshold (neither: just show them); the change is logged."""
        guild_id = check_moderator(moderator)
        changes: GuildSettingsChanges = {}
        if mode is not None:
            changes["safety_mode"] = mode.value
        if threshold is not None:
            if not 0 < threshold <= 1:
                raise InvalidRequest("The threshold is a probability: over 0 and at most 1 (e.g. 0.6).")
            changes["safety_threshold"] = threshold
        if changes:
            await self._moderation.update_guild_settings(guild_id, **changes)
            await self._moderation.record_action(guild_id, moderator.user_id, "safety.update", None, changes)
        return await self.policy(guild_id)

    async def release(self, moderator: Requester, job_id: int) -> Job:
        """Let a held result be shown (spoilered outside age-restricted channels); logged."""
        job = await self._moderated_job(moderator, job_id)
        if job.shown != Shown.HELD.value:
            raise InvalidRequest(f"Job #{job_id} is not held.")
        if await self._store.release(job_id, moderator.user_id):
            await self._moderation.record_action(
                job.spec.guild_id or 0, moderator.user_id, "result.release", job.user_id, {"job": job_id}
            )
        return await self._jobs.get_job(job_id)

    async def recheck(self, moderator: Requester, job_id: int) -> tuple[Job, list[float | None]]:
        """Score a result's images again (with this process's classifier, if it has one) and judge them
        under the server's current policy; the job and its scores."""
        job = await self._moderated_job(moderator, job_id)
        if self._classifier is not None:
            stored = await self._jobs.job_images(job_id)
            images = [await self._jobs.load_image(image.id) for image in stored]
            await self._store.set_scores(job_id, await asyncio.to_thread(self._classifier.scores, images))
        await self._moderation.record_action(
            job.spec.guild_id or 0, moderator.user_id, "result.recheck", job.user_id, {"job": job_id}
        )
        return job, await self.scores(job)

    async def _moderated_job(self, moderator: Requester, job_id: int) -> Job:
        guild_id = check_moderator(moderator)
        job = await self._jobs.get_job(job_id)
        if job.spec.guild_id != guild_id:
            raise JobNotFound(job_id)  # another server's job: as if it did not exist
        if job.state is not JobState.SUCCEEDED or job.is_removed:
            raise InvalidRequest(f"Job #{job_id} has no images to show.")
        return job
