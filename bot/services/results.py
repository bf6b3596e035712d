"""Following jobs once they are queued and handing out their results: what the Discord side and the command
line need after a member's request became a job, and Discord's bookkeeping of where each result goes."""

from __future__ import annotations

from collections.abc import Callable

from PIL import Image

from bot.domain.events import JobUpdate, QueueInfo
from bot.domain.jobs import Job
from bot.domain.records import Delivery, DeliveryTarget
from bot.scheduler.scheduler import GpuScheduler
from bot.store.deliveries import DeliveryStore
from bot.store.jobs import JobStore

Listener = Callable[[JobUpdate], None]


class ResultService:
    def __init__(self, jobs: JobStore, deliveries: DeliveryStore, scheduler: GpuScheduler) -> None:
        self._jobs = jobs
        self._deliveries = deliveries
        self._scheduler = scheduler

    # -- following jobs -----------------------------------------------------------------------------------

    def follow(self, listener: Listener) -> None:
        """Call `listener` with every job's state changes and progress from now on."""
        self._scheduler.add_listener(listener)

    def unfollow(self, listener: Listener) -> None:
        self._scheduler.remove_listener(listener)

    def queue_info(self, job_id: int) -> QueueInfo | None:
        """Place in line and time to done, or None when the job is not waiting in this process."""
        return self._scheduler.queue_info(job_id)

    async def wait_finished(self, job_id: int) -> Job:
        return await self._scheduler.wait_finished(job_id)

    async def job(self, job_id: int) -> Job:
        """The job as stored now (JobNotFound if there is none)."""
        return await self._jobs.get_job(job_id)

    # -- results ------------------------------------------------------------------------------------------

    async def images(self, job_id: int) -> list[Image.Image]:
        """A finished job's images, decoded, in order ([] for a job without images)."""
        stored = await self._jobs.job_images(job_id)
        return [await self._jobs.load_image(image.id) for image in stored]

    async def image(self, image_id: int) -> Image.Image:
        """One stored image, decoded (ImageNotFound if it is gone)."""
        return await self._jobs.load_image(image_id)

    # -- where results go (Discord's bookkeeping) ---------------------------------------------------------

    async def track(self, job_id: int, target: DeliveryTarget) -> Delivery:
        """Remember where a job's status message is, so its result reaches it (also after a restart)."""
        return await self._deliveries.create(job_id, target)

    async def delivery(self, job_id: int) -> Delivery | None:
        return await self._deliveries.get(job_id)

    async def undelivered_results(self) -> list[Delivery]:
        """Results that are ready but not yet delivered (the bot stopped before it could)."""
        return await self._deliveries.undelivered_finished()

    async def waiting_deliveries(self) -> list[Delivery]:
        """Status messages of jobs still queued or running."""
        return await self._deliveries.active()

    async def mark_attempted(self, job_id: int) -> None:
        await self._deliveries.mark_attempted(job_id)

    async def mark_delivered(self, job_id: int, *, channel_id: int | None, message_id: int | None) -> bool:
        """Record the delivery once; False if it was already recorded."""
        return await self._deliveries.mark_delivered(job_id, channel_id=channel_id, message_id=message_id)

    async def forget_expired_tokens(self) -> int:
        """Clear interaction tokens that can no longer be used; how many were cleared."""
        return await self._deliveries.forget_expired_tokens()

    async def record_message(
        self, message_id: int, channel_id: int, job_id: int, image_index: int | None
    ) -> None:
        """Remember that a message shows a job's grid (index None) or one of its images."""
        await self._deliveries.record_message(message_id, channel_id, job_id, image_index)

    async def message_target(self, message_id: int) -> tuple[int, int | None] | None:
        """The (job id, image index or None for a grid) a message of the bot's shows."""
        return await self._deliveries.message_target(message_id)

    async def messages_of(self, job_id: int) -> list[tuple[int, int]]:
        """Every message of the bot's about a job, as (channel id, message id): its status message, its
        result, and those that show one of its images alone (to delete them with the job's images)."""
        return await self._deliveries.messages_of(job_id)
