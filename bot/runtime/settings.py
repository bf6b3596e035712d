"""Settings from the environment and `.env` (see `.env.example` for every one, with a comment)."""

from __future__ import annotations

import os
import socket
from dataclasses import replace
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.domain.batch_profile import BatchProfile, image_budgets, parse_sizes
from bot.domain.batching import BatchingConfig
from bot.domain.limits import UserLimits
from bot.domain.params import GenerationLimits

DEFAULT_MODEL = "stabilityai/stable-diffusion-xl-base-1.0"
DEFAULT_BATCH_PROFILE = Path("data/batch-profile.json")


class SettingsError(Exception):
    """A missing or invalid setting; the message is one line that says what to fix."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        env_ignore_empty=True,  # `DISCORD_TOKEN=` in a copied .env.example means "not set"
        env_parse_none_str="none",  # DAILY_QUOTA=none: no limit
    )

    # Discord
    discord_token: SecretStr | None = None
    discord_guild_id: int | None = None

    # Storage
    database_url: str = "sqlite+aiosqlite:///./data/imagine.db"
    image_dir: Path = Path("./data/images")
    # Image files of jobs that finished longer ago are deleted once a day (the jobs stay); 0: kept forever.
    image_retention_days: int = Field(default=30, ge=0, le=36_500)

    # Model and device
    model: str = DEFAULT_MODEL
    vae: str | None = None
    device: Literal["auto", "cuda", "cpu", "mps"] = "auto"
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    base_resolution: int | None = Field(default=None, ge=64, le=2048)
    # Speed-ups (inference/optimize.py): auto = fused QKV + channels_last; COMPILE=on adds torch.compile.
    optimize: Literal["auto", "off"] = "auto"
    compile: Literal["auto", "on", "off"] = "auto"

    # Fast mode (`--fast`): a few-step UNet (SDXL-Lightning, Hyper-SD) or LoRA (LCM-LoRA, Hyper-SD) on the
    # base model; unset = no fast mode. See inference/fast.py for the forms FAST_MODEL takes.
    fast_model: str | None = None
    fast_scheduler: Literal["euler", "lcm", "tcd", "ddim"] = "euler"
    fast_steps: int = Field(default=4, ge=1, le=50)
    fast_max_steps: int = Field(default=8, ge=1, le=50)
    fast_guidance: float = Field(default=0.0, ge=0, le=30)
    fast_max_guidance: float = Field(default=2.0, ge=0, le=30)

    # Several processes sharing the queue (PostgreSQL only; see "Beyond one machine" in the README)
    worker_name: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}", max_length=64)
    lease_seconds: float = Field(default=30.0, ge=3, le=3600)
    queue_poll_seconds: float = Field(default=1.0, gt=0, le=60)

    # Stopping on SIGTERM or SIGINT (`run`, `worker`): seconds the running batch gets to finish and be stored
    # and delivered; past them, what is not done goes back to the queue.
    stop_timeout: float = Field(default=60.0, ge=0, le=3600)

    # Batching and retries
    max_batch_images: int = Field(default=8, ge=1, le=64)
    batch_wait_ms: float = Field(default=20.0, ge=0, le=1000)
    max_attempts: int = Field(default=3, ge=1, le=10)
    # The measured batch profile (`imagine-bot bench --profile-out`); unset: DEFAULT_BATCH_PROFILE when that
    # file exists; `none`: no profile (every size keeps MAX_BATCH_IMAGES).
    batch_profile: Path | None = None

    # Warm-up at start: every served shape rendered once before the scheduler reports ready (auto: when
    # COMPILE=on, where each new shape compiles); WARM_UP_BUCKETS limits the sizes (WxH list; unset: all).
    warm_up: Literal["auto", "on", "off"] = "auto"
    warm_up_buckets: str | None = None

    # Generation defaults and bounds
    default_steps: int = Field(default=30, ge=1, le=150)
    max_steps: int = Field(default=60, ge=1, le=150)
    default_guidance: float = Field(default=6.0, ge=0, le=30)

    # Per-member limits (guilds can override them)
    rate_per_minute: float = Field(default=6.0, gt=0)
    rate_burst: int = Field(default=3, ge=1)
    max_concurrent_jobs: int = Field(default=4, ge=1)
    daily_quota: int | None = Field(default=50, ge=0)

    # Output safety: every image is scored before it is posted ("off" skips the classifier; a server's
    # `block` mode then holds every result). SAFETY_MODE and SAFETY_THRESHOLD are the servers' defaults.
    safety_model: str = "opennsfw"
    safety_mode: Literal["block", "spoiler", "age-restricted"] = "spoiler"
    safety_threshold: float = Field(default=0.6, gt=0, le=1)
    safety_threads: int = Field(default=2, ge=1, le=64)

    # Direct messages: off unless the operator allows them, then with limits of their own
    allow_dms: bool = False
    dm_rate_per_minute: float = Field(default=2.0, gt=0)
    dm_rate_burst: int = Field(default=2, ge=1)
    dm_max_concurrent_jobs: int = Field(default=1, ge=1)
    dm_daily_quota: int | None = Field(default=10, ge=0)
    # The operator's blocked words, comma-separated: refused on every server and in DMs
    blocked_words: str = ""

    # Logging
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_json: bool = False

    # Observability: /metrics, /healthz and /readyz (METRICS_PORT=0 turns the server off)
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=9108, ge=0, le=65535)

    @field_validator("database_url")
    @classmethod
    def _supported_database(cls, value: str) -> str:
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("use sqlite+aiosqlite:///path/to/file.db or postgresql+asyncpg://user@host/db")
        return value

    @field_validator("warm_up_buckets")
    @classmethod
    def _sizes(cls, value: str | None) -> str | None:
        if value is not None:
            parse_sizes(value)  # raises ValueError naming the bad item
        return value

    @property
    def shares_queue(self) -> bool:
        """On PostgreSQL any number of processes may work the queue, so each one shares it."""
        return self.database_url.startswith("postgresql")

    def batching(self) -> BatchingConfig:
        """MAX_BATCH_IMAGES and BATCH_WAIT_MS, with the budgets the batch profile gives for each size."""
        profile = self.load_batch_profile()
        return BatchingConfig(
            max_images=self.max_batch_images,
            max_wait=self.batch_wait_ms / 1000,
            size_budgets=image_budgets(profile) if profile is not None else {},
        )

    def batch_profile_path(self) -> Path | None:
        """BATCH_PROFILE when set (None for `none`), else DEFAULT_BATCH_PROFILE if that file exists."""
        if "batch_profile" in self.model_fields_set:
            return self.batch_profile
        return DEFAULT_BATCH_PROFILE if DEFAULT_BATCH_PROFILE.is_file() else None

    def load_batch_profile(self) -> BatchProfile | None:
        """The profile in use, or None; a file that is missing or not a profile raises SettingsError."""
        path = self.batch_profile_path()
        if path is None:
            return None
        try:
            return BatchProfile.from_json(path.read_text(encoding="utf-8"))
        except OSError as error:
            reason = f"{path} cannot be read ({error.strerror or error})"
        except ValueError as error:  # ProfileError, or text that is not UTF-8
            reason = f"{path} is not a batch profile from `imagine-bot bench --profile-out` ({error})"
        raise SettingsError(f"Setting BATCH_PROFILE is invalid: {reason}.")

    @property
    def warms_up(self) -> bool:
        """WARM_UP=on, or auto with COMPILE=on (without compile, warming up saves the first job little)."""
        return self.warm_up == "on" or (self.warm_up == "auto" and self.compile == "on")

    def warm_up_sizes(self) -> tuple[tuple[int, int], ...] | None:
        """WARM_UP_BUCKETS as (width, height) sizes; None: every served size."""
        return parse_sizes(self.warm_up_buckets) if self.warm_up_buckets else None

    def user_limits(self) -> UserLimits:
        return UserLimits(
            rate_per_minute=self.rate_per_minute,
            burst=self.rate_burst,
            max_concurrent=self.max_concurrent_jobs,
            daily_quota=self.daily_quota,
        )

    def dm_limits(self) -> UserLimits | None:
        """A member's limits in direct messages; None while DMs are not allowed (ALLOW_DMS)."""
        if not self.allow_dms:
            return None
        return UserLimits(
            rate_per_minute=self.dm_rate_per_minute,
            burst=self.dm_rate_burst,
            max_concurrent=self.dm_max_concurrent_jobs,
            daily_quota=self.dm_daily_quota,
        )

    def operator_blocked_words(self) -> tuple[str, ...]:
        return tuple(word.strip() for word in self.blocked_words.split(",") if word.strip())

    def generation_limits(self, native_resolution: int) -> GenerationLimits:
        return GenerationLimits(
            base_resolution=self.base_resolution or native_resolution,
            default_steps=min(self.default_steps, self.max_steps),
            max_steps=self.max_steps,
            default_guidance=self.default_guidance,
        )

    def fast_generation_limits(self, native_resolution: int) -> GenerationLimits | None:
        """The fast model's bounds, or None when FAST_MODEL is unset (fast mode off)."""
        if not self.fast_model:
            return None
        full = self.generation_limits(native_resolution)
        return replace(
            full,
            default_steps=min(self.fast_steps, self.fast_max_steps),
            max_steps=self.fast_max_steps,
            default_guidance=min(self.fast_guidance, self.fast_max_guidance),
            max_guidance=self.fast_max_guidance,
        )


def load_settings(**overrides: object) -> Settings:
    """Read settings; any problem becomes one SettingsError line naming the variable."""
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        first = error.errors()[0]
        name = str(first["loc"][0]).upper() if first["loc"] else "settings"
        raise SettingsError(f"Setting {name} is invalid: {first['msg']}.") from None
    settings.load_batch_profile()  # a bad profile stops start-up here, with the other settings
    return settings
