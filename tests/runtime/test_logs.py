"""The bot's log as an operator reads it: one INFO line per job transition with its fields (console and
JSON), fatal errors as structured records, and the model libraries' progress bars and warnings kept out."""

from __future__ import annotations

import ast
import io
import json
import logging
import re
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from bot.domain.jobs import JobState
from bot.domain.limits import UserLimits
from bot.domain.members import Requester
from bot.runtime.logs import configure_logging
from tests.fakes import ServiceWorld, service_world

GUILD = 500
ALICE = Requester(user_id=1, guild_id=GUILD, channel_id=9)
BOB = Requester(user_id=2, guild_id=GUILD, channel_id=9)
TRANSITIONS = ("job queued", "job started", "job done", "job failed", "job cancelled", "job delivered")
_FIELD = re.compile(r"(\w+)=('(?:[^'\\]|\\.)*'|\S+)")


def _console_value(text: str) -> Any:
    if text.startswith("'"):
        return ast.literal_eval(text)
    if text == "None":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_line(line: str, *, json_mode: bool) -> dict[str, Any]:
    """One rendered record as a dict: JSON as it is; a console line's message and key=value fields."""
    if json_mode:
        record: dict[str, Any] = json.loads(line)
        return record
    match = re.match(r"\S+ \[(\w+)\s*\] (.+?)\s+\[([\w.]+)\](.*)$", line)
    assert match, line
    level, event, logger, rest = match.groups()
    fields = {key: _console_value(value) for key, value in _FIELD.findall(rest)}
    return {"level": level, "event": event, "logger": logger, **fields}


class Captured:
    """configure_logging as the command line calls it, with the one handler writing to a string."""

    def __init__(self) -> None:
        self.stream = io.StringIO()
        self.json = False

    def configure(self, level: str = "INFO", *, json_mode: bool = False) -> None:
        configure_logging(level, json=json_mode)
        self.json = json_mode
        handler = logging.getLogger().handlers[0]
        assert isinstance(handler, logging.StreamHandler)
        handler.setStream(self.stream)

    def records(self) -> list[dict[str, Any]]:
        lines = self.stream.getvalue().splitlines()
        if not self.json:  # a console record's traceback follows it on lines of its own
            lines = [line for line in lines if re.match(r"\d{4}-\d\d-\d\dT", line)]
        return [parse_line(line, json_mode=self.json) for line in lines if line.strip()]

    def transitions(self) -> list[dict[str, Any]]:
        return [record for record in self.records() if record["event"] in TRANSITIONS]


@pytest.fixture
def captured() -> Iterator[Captured]:
    root = logging.getLogger()
    saved = root.handlers[:], root.level, sys.excepthook, threading.excepthook
    yield Captured()
    root.handlers[:], level, sys.excepthook, threading.excepthook = saved
    root.setLevel(level)
    structlog.reset_defaults()


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[ServiceWorld]:
    limits = UserLimits(rate_per_minute=60, burst=10, max_concurrent=3, daily_quota=10)
    async with service_world(tmp_path, limits) as world:
        yield world


def one(records: list[dict[str, Any]], event: str, job: int) -> dict[str, Any]:
    found = [record for record in records if record["event"] == event and record["job"] == job]
    assert len(found) == 1, (event, job, records)
    return found[0]


@pytest.mark.parametrize("json_mode", [False, True], ids=["console", "json"])
async def test_each_transition_of_a_job_is_one_line_with_its_fields(
    captured: Captured, world: ServiceWorld, json_mode: bool
) -> None:
    """Four jobs through the real service and scheduler: one that runs while the clock moves 5 s, one that
    waits those 5 s behind it, one cancelled while queued, one whose render fails. Each transition is one
    INFO line whose fields are values (numbers stay numbers in JSON)."""
    captured.configure(json_mode=json_mode)
    gate = world.backend.gate = threading.Event()
    world.backend.rendering.clear()
    first = await world.service.imagine(ALICE, "a lighthouse --ar 16:9 --seed 1")
    await world.backend.until_rendering()
    second = await world.service.imagine(BOB, "a fox --steps 4")
    cancelled = await world.service.imagine(BOB, "a cat")
    await world.service.cancel(BOB, cancelled.id)
    world.clock.advance(5)
    gate.set()
    assert (await world.done(first)).state is JobState.SUCCEEDED
    assert (await world.done(second)).state is JobState.SUCCEEDED
    world.backend.fail_with = RuntimeError("boom")
    failed = await world.service.imagine(ALICE, "a storm")
    assert (await world.done(failed)).state is JobState.FAILED

    records = captured.transitions()
    assert all(record["level"] == "info" for record in records)
    assert all(record["logger"] == "bot.scheduler.scheduler" for record in records)
    events = {
        job.id: [record["event"] for record in records if record["job"] == job.id]
        for job in (first, second, cancelled, failed)
    }
    assert events == {
        first.id: ["job queued", "job started", "job done"],
        second.id: ["job queued", "job started", "job done"],
        cancelled.id: ["job queued", "job cancelled"],
        failed.id: ["job queued", "job started", "job failed"],
    }
    who = {"guild": GUILD, "member": 1, "kind": "generate", "model": "full", "images": 4}
    queued = one(records, "job queued", first.id)
    assert queued.items() >= {**who, "size": "80x48", "steps": 3, "queue_length": 1}.items()
    started = one(records, "job started", first.id)
    assert started.items() >= {**who, "size": "80x48", "batch": 4, "queue_wait": 0.0, "attempt": 1}.items()
    done = one(records, "job done", first.id)
    assert done.items() >= {**who, "batch": 4, "queue_wait": 0.0, "render_time": 5.0}.items()
    waited = one(records, "job started", second.id)
    assert waited.items() >= {"member": 2, "steps": 4, "size": "64x64", "queue_wait": 5.0}.items()
    assert one(records, "job done", second.id)["render_time"] == 0.0
    assert one(records, "job cancelled", cancelled.id).items() >= {"member": 2, "kind": "generate"}.items()
    failure = one(records, "job failed", failed.id)
    assert failure.items() >= {"member": 1, "error": "The image generator failed: boom"}.items()
    assert isinstance(failure["render_time"], float)
    assert "worker" not in started  # only a worker sharing a queue names itself


@pytest.mark.parametrize("json_mode", [False, True], ids=["console", "json"])
def test_an_uncaught_exception_is_one_structured_fatal_record(tmp_path: Path, json_mode: bool) -> None:
    """A real process that dies of an exception after configure_logging: its stderr is one CRITICAL
    record in the log's format (JSON: one parseable object), traceback included, and it exits 1."""
    code = (
        "from bot.runtime.logs import configure_logging\n"
        f"configure_logging('INFO', json={json_mode})\n"
        "def start():\n"
        "    raise RuntimeError('the database went away')\n"
        "start()\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    if json_mode:
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        record = json.loads(lines[0])
        assert record["level"] == "critical"
        assert record["event"] == "fatal error: the database went away"
        assert "RuntimeError: the database went away" in record["exception"]
        assert "in start" in record["exception"]
    else:
        first, *rest = result.stderr.strip().splitlines()
        assert parse_line(first, json_mode=False)["level"] == "critical"
        assert "fatal error: the database went away" in first
        assert "RuntimeError: the database went away" in "\n".join(rest)


def test_a_thread_that_dies_is_logged_as_a_record(captured: Captured) -> None:
    captured.configure(json_mode=True)

    def fail() -> None:
        raise ValueError("the worker thread broke")

    thread = threading.Thread(target=fail, name="gpu_0")
    thread.start()
    thread.join()
    (record,) = captured.records()
    assert record["level"] == "critical"
    assert record["event"] == "thread gpu_0 failed: the worker thread broke"
    assert record["thread_name"] == "gpu_0"
    assert "ValueError: the worker thread broke" in record["exception"]


def test_voice_warnings_of_discord_py_are_dropped(captured: Captured) -> None:
    """discord.py's two voice warnings at start are dropped; its other warnings are kept."""
    captured.configure()
    client_log = logging.getLogger("discord.client")
    client_log.warning("PyNaCl is not installed, voice will NOT be supported")
    client_log.warning("davey is not installed, voice will NOT be supported")
    client_log.warning("Shard ID %s has stopped responding to the gateway.", None)
    events = [record["event"] for record in captured.records()]
    assert events == ["Shard ID None has stopped responding to the gateway."]


def _transformers_logger(name: str) -> logging.Logger:
    import transformers.utils.logging as transformers_logging

    return transformers_logging.get_logger(name)


@pytest.mark.parametrize(
    ("level", "shown"), [("INFO", ["bad weights"]), ("DEBUG", ["unused weights", "bad weights"])]
)
def test_model_library_warnings_only_at_debug(captured: Captured, level: str, shown: list[str]) -> None:
    """transformers and diffusers log through a stderr handler of their own; once quieted their records go
    through the bot's handler (JSON here), errors always, warnings at LOG_LEVEL=DEBUG only."""
    from inference.quiet import quiet_model_libraries

    captured.configure(level, json_mode=True)
    quiet_model_libraries()
    logger = _transformers_logger("transformers.modeling_utils")
    logger.warning("unused weights")
    logger.error("bad weights")
    records = [record for record in captured.records() if record["logger"].startswith("transformers")]
    assert [record["event"] for record in records] == shown


def test_no_progress_bars_while_a_model_loads(
    tiny_model_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Loading the tiny pipeline draws diffusers' and transformers' bars on stderr by default; the backend's
    load draws none."""
    import diffusers
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging

    from inference.pipeline import DiffusersBackend

    def loud() -> None:
        diffusers_logging.enable_progress_bar()
        transformers_logging.enable_progress_bar()

    def drawn(load: Callable[[], object]) -> str:
        capfd.readouterr()
        load()
        return capfd.readouterr().err

    loud()
    assert "Loading pipeline components" in drawn(
        lambda: diffusers.StableDiffusionXLPipeline.from_pretrained(str(tiny_model_path))
    )
    loud()
    backend = DiffusersBackend(str(tiny_model_path), device="cpu", dtype="float32")
    output = drawn(backend.load)
    assert "Loading" not in output
    assert "%|" not in output
