"""Warm-up at start (WARM_UP=on): every shape the scheduler can form is rendered before it is ready and
before the first job, through the app as `imagine-bot run` and `worker` build it (fake backend)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from bot.domain.batch_profile import BatchProfile, BucketThroughput
from bot.domain.clock import SystemClock
from bot.domain.jobs import JobKind, JobSpec, JobState
from bot.domain.params import GenerationLimits, build_params
from bot.domain.render import RenderBatch
from bot.observability import Metrics, scheduler_ready_check
from bot.runtime.app import ImagineApp
from bot.runtime.settings import Settings, SettingsError, load_settings
from bot.store import Stores
from tests.fakes import FakeBackend

UPSCALE_SHAPES = [(images, 128, 128) for images in range(1, 9)]


def settings_for(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": f"sqlite+aiosqlite:///{tmp_path}/jobs.db",
        "image_dir": tmp_path / "images",
        "batch_profile": None,  # not the checkout's data/batch-profile.json
    }
    return load_settings(_env_file=None, **(values | overrides))


async def queue_a_job(settings: Settings) -> int:
    """A generate job stored QUEUED before the bot starts (as after a restart)."""
    stores = await Stores.open(settings.database_url, settings.image_dir, SystemClock())
    try:
        params = build_params("a cat", limits=GenerationLimits(base_resolution=64), seed=1, steps=3)
        return (await stores.jobs.create_job(JobSpec(JobKind.GENERATE, user_id=1, params=params))).id
    finally:
        await stores.close()


class Recorder:
    """Notes each render call's shape, and whether the scheduler reported ready at that moment."""

    def __init__(self, backend: FakeBackend) -> None:
        self.calls: list[tuple[int, int, int, str, bool]] = []
        self.app: ImagineApp | None = None
        self.release = threading.Event()
        backend.on_render = self.on_render
        original_load = backend.load

        def slow_load() -> None:
            self.release.wait(10)  # until the test holds the app, so it can look at its readiness
            original_load()

        backend.load = slow_load  # type: ignore[method-assign]

    def on_render(self, batch: RenderBatch) -> None:
        assert self.app is not None
        shape = (len(batch.tasks), batch.key.width, batch.key.height)
        self.calls.append((*shape, batch.tasks[0].prompt, self.app.scheduler.is_running))


async def start(
    settings: Settings, backend: FakeBackend, metrics: Metrics | None = None
) -> tuple[ImagineApp, Recorder]:
    """Start the app as `imagine-bot run` does (backend instrumented for metrics), the load held until
    the recorder can see the app."""
    recorder = Recorder(backend)
    metrics = metrics or Metrics()
    app = await ImagineApp.start(settings, backend=metrics.instrument(backend), wait_for_model=False)
    recorder.app = app
    recorder.release.set()
    return app, recorder


async def started_until_ready(settings: Settings, backend: FakeBackend) -> Recorder:
    """Start the app, wait until it reports ready (warm-up done), stop it; what the backend saw."""
    app, recorder = await start(settings, backend)
    try:
        await asyncio.wait_for(app.scheduler.wait_ready(), 10)
    finally:
        await app.close()
    return recorder


def profile_best_at_4(tmp_path: Path) -> Path:
    """A profile in which 64² is measured best at 4 images a call (8 is within 3 %)."""
    profile = tmp_path / "profile.json"
    buckets = (BucketThroughput(64, 64, {4: 10.0, 8: 10.1}),)
    profile.write_text(BatchProfile("cpu", "test", "tiny", "float32", "none", 2, 5.0, buckets).to_json())
    return profile


async def test_every_shape_is_warmed_before_ready_and_before_the_first_job(tmp_path: Path) -> None:
    """64² serves 4-image jobs (calls of 4 and 8 under MAX_BATCH_IMAGES=8), its upscale size 128² serves
    1-image jobs (calls of 1 to 8); all ten render once before /readyz turns ready and the queued job runs."""
    settings = settings_for(tmp_path, warm_up="on", warm_up_buckets="64x64,128x128")
    job_id = await queue_a_job(settings)
    backend = FakeBackend(native_resolution=64)
    metrics = Metrics()
    app, recorder = await start(settings, backend, metrics)
    try:
        ready = scheduler_ready_check(app.scheduler, app.stores.database)
        await asyncio.wait_for(app.scheduler.wait_ready(), 10)
        assert await ready() is None
        job = await asyncio.wait_for(app.scheduler.wait_finished(job_id), 10)
        assert job.state is JobState.SUCCEEDED
    finally:
        await app.close()
    warm_ups = [(4, 64, 64), (8, 64, 64), *UPSCALE_SHAPES]
    assert recorder.calls == [
        *((*shape, "warm-up", False) for shape in warm_ups),  # not ready while warming up
        (4, 64, 64, "a cat", True),  # then the member's job
    ]
    assert all(batch.key.steps == 2 and batch.key.guidance > 1 for batch in backend.batches[:-1])
    # Warm-up renders are not members' images: the metrics count the job's call only.
    assert 'imagine_batch_images_count{model="full"} 1.0' in metrics.render().decode()


async def test_the_profile_budget_decides_the_warmed_batch_sizes(tmp_path: Path) -> None:
    """With 64² measured best at 4 images, no call of 8 is ever formed there, so none is warmed."""
    profile = profile_best_at_4(tmp_path)
    settings = settings_for(tmp_path, warm_up="on", warm_up_buckets="64x64", batch_profile=profile)
    backend = FakeBackend(native_resolution=64)
    recorder = await started_until_ready(settings, backend)
    assert [call[:3] for call in recorder.calls] == [(4, 64, 64)]


async def test_compile_on_warms_every_served_size_by_default(tmp_path: Path) -> None:
    """COMPILE=on turns the warm-up on (WARM_UP=auto): 5 distinct sizes at 64 px and their 5 doubles."""
    settings = settings_for(tmp_path, compile="on", max_batch_images=4)
    backend = FakeBackend(native_resolution=64)
    recorder = await started_until_ready(settings, backend)
    sizes = {call[1:3] for call in recorder.calls}
    assert len(sizes) == 10
    assert len(recorder.calls) == 5 * 1 + 5 * 4  # 4-image calls at the buckets; 1..4 at the upscale sizes


async def test_no_warm_up_by_default(tmp_path: Path) -> None:
    """COMPILE and WARM_UP at their defaults: the model loads and the scheduler is ready, nothing rendered."""
    backend = FakeBackend(native_resolution=64)
    recorder = await started_until_ready(settings_for(tmp_path), backend)
    assert recorder.calls == []


async def test_a_size_never_served_stops_start_up_before_loading(tmp_path: Path) -> None:
    """A WARM_UP_BUCKETS typo is one clear line at start, not minutes of loading later."""
    settings = settings_for(tmp_path, warm_up="on", warm_up_buckets="1000x1000")
    backend = FakeBackend(native_resolution=64)
    with pytest.raises(SettingsError, match="Setting WARM_UP_BUCKETS is invalid: 1000x1000 is not a size"):
        await ImagineApp.start(settings, backend=backend)
    assert not backend.loaded


async def test_the_fast_model_is_warmed_too(tmp_path: Path) -> None:
    """With FAST_MODEL set, the fast model's shapes follow the full model's: its own graphs, at its default
    guidance (0: no classifier-free guidance), and MAX_BATCH_IMAGES as its budget (profiles measure the
    full model only)."""
    profile = profile_best_at_4(tmp_path)
    settings = settings_for(
        tmp_path, warm_up="on", warm_up_buckets="64x64", batch_profile=profile, fast_model="some/fast-unet"
    )
    backend = FakeBackend(native_resolution=64)
    recorder = await started_until_ready(settings, backend)
    warmed = [(len(b.tasks), b.key.model, b.key.guidance) for b in backend.batches]
    assert warmed == [(4, "default", 5.0), (4, "fast", 0.0), (8, "fast", 0.0)]
    assert not any(call[4] for call in recorder.calls), "all before ready"
