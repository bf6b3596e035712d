"""The observability HTTP server on a real port on 127.0.0.1: /metrics, /healthz, /readyz."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import CONTENT_TYPE_LATEST

from bot.domain.batching import BatchingConfig
from bot.domain.clock import SystemClock
from bot.observability import Metrics, make_app, scheduler_ready_check, serve, serve_observability
from bot.runtime.settings import Settings
from bot.scheduler.scheduler import GpuScheduler
from bot.store import Stores
from tests.fakes import FakeBackend


@pytest.fixture
async def stores(tmp_path: Path) -> AsyncIterator[Stores]:
    stores = await Stores.open(f"sqlite+aiosqlite:///{tmp_path}/jobs.db", tmp_path / "images", SystemClock())
    yield stores
    await stores.close()


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, str, str]:
    async with session.get(url) as response:
        return response.status, response.headers["Content-Type"], await response.text()


async def test_endpoints_follow_the_scheduler_and_store(stores: Stores) -> None:
    """/readyz is 503 with a reason until the model loads, then 200; /healthz and /metrics always answer."""
    backend = FakeBackend()
    blocked = asyncio.Event()
    original_load = backend.load

    def slow_load() -> None:
        asyncio.run_coroutine_threadsafe(blocked.wait(), loop).result(timeout=10)
        original_load()

    loop = asyncio.get_running_loop()
    backend.load = slow_load  # type: ignore[method-assign]
    metrics = Metrics()
    scheduler = GpuScheduler(
        stores.jobs, metrics.instrument(backend), BatchingConfig(max_wait=0), SystemClock()
    )
    metrics.watch(scheduler)
    app = make_app(metrics, scheduler_ready_check(scheduler, stores.database))
    async with serve(app, "127.0.0.1", 0) as url, aiohttp.ClientSession() as session:
        assert url.startswith("http://127.0.0.1:")
        assert not url.endswith(":0")
        assert await get(session, f"{url}/healthz") == (200, "text/plain; charset=utf-8", "ok\n")
        status, _, reason = await get(session, f"{url}/readyz")
        assert (status, reason) == (503, "the model is not loaded or the scheduler is not running\n")

        await scheduler.start()
        try:
            status, _, _ = await get(session, f"{url}/readyz")
            assert status == 503  # still loading
            blocked.set()
            await scheduler.wait_ready()
            assert await get(session, f"{url}/readyz") == (200, "text/plain; charset=utf-8", "ready\n")

            status, content_type, body = await get(session, f"{url}/metrics")
            assert status == 200
            assert content_type == CONTENT_TYPE_LATEST
            assert "imagine_queue_depth 0.0" in body
            assert "# TYPE imagine_job_queued_seconds histogram" in body
        finally:
            await scheduler.stop()
        await stores.close()  # a closed store fails the trivial query
        status, _, reason = await get(session, f"{url}/readyz")
        assert status == 503


async def test_model_load_failure_is_a_reason(stores: Stores) -> None:
    backend = FakeBackend()

    def broken() -> None:
        raise OSError("no such model")

    backend.load = broken  # type: ignore[method-assign]
    scheduler = GpuScheduler(stores.jobs, backend, BatchingConfig(max_wait=0), SystemClock())
    await scheduler.start()
    try:
        with pytest.raises(OSError, match="no such model"):
            await scheduler.wait_ready()
        reason = await scheduler_ready_check(scheduler, stores.database)()
        assert reason == "the model failed to load: OSError"
    finally:
        await scheduler.stop()


async def test_serve_observability_uses_settings_and_port_zero_disables() -> None:
    metrics = Metrics()

    async def ready() -> str | None:
        return None

    async with serve_observability(Settings(metrics_port=0), metrics, ready) as url:
        assert url is None
    # A free port for the enabled case: bind to 0 once to learn one.
    async with serve(make_app(metrics, ready), "127.0.0.1", 0) as probe:
        port = int(probe.rsplit(":", 1)[1])
    async with (
        serve_observability(Settings(metrics_host="127.0.0.1", metrics_port=port), metrics, ready) as url,
        aiohttp.ClientSession() as session,
    ):
        assert url == f"http://127.0.0.1:{port}"
        assert (await get(session, f"{url}/readyz"))[0] == 200
        assert "imagine_worker_up 0.0" in (await get(session, f"{url}/metrics"))[2]
