"""The tables, as typed SQLAlchemy models. Only `bot/store` and `migrations/` import this module."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# Stable constraint names, so migrations can refer to them on every backend (SQLite batch mode needs them).
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """`DateTime(timezone=True)` that always hands back an aware UTC datetime.

    PostgreSQL keeps the zone (timestamptz); SQLite keeps none, so values are stored as naive UTC there and
    get `tzinfo=UTC` back when read. A naive datetime going in is a bug and raises.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: the store only takes timezone-aware datetimes")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime()}


class JobRow(Base):
    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    user_id: Mapped[int] = mapped_column(BigInteger)
    guild_id: Mapped[int | None] = mapped_column(BigInteger)
    channel_id: Mapped[int | None] = mapped_column(BigInteger)
    parent_job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    # images.job_id points back here: this side of the cycle is added after both tables exist.
    source_image_id: Mapped[int | None] = mapped_column(
        ForeignKey("images.id", ondelete="SET NULL", use_alter=True)
    )
    prompt: Mapped[str] = mapped_column(Text)
    negative_prompt: Mapped[str] = mapped_column(Text)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    steps: Mapped[int] = mapped_column(Integer)
    guidance: Mapped[float] = mapped_column(Float)
    seed: Mapped[int] = mapped_column(BigInteger)  # seeds go to 2**32 - 1
    aspect: Mapped[str] = mapped_column(String(16))
    strength: Mapped[float | None] = mapped_column(Float)
    model: Mapped[str] = mapped_column(String(100))
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    error: Mapped[str | None] = mapped_column(Text)
    # Shared-queue workers: who holds a RUNNING job, and until when (renewed by heartbeats).
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # Image files removed (the row and its image rows stay): when, why ("deleted" | "expired"), by whom.
    removed_at: Mapped[datetime | None]
    removed_reason: Mapped[str | None] = mapped_column(String(16))
    removed_by: Mapped[int | None] = mapped_column(BigInteger)
    # Output safety at delivery: how the result was shown ("plain" | "spoiler" | "held"), and a
    # moderator's release of a held one.
    shown: Mapped[str | None] = mapped_column(String(16))
    released_by: Mapped[int | None] = mapped_column(BigInteger)
    released_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_jobs_state_id", "state", "id"),
        Index("ix_jobs_removed_at_finished_at", "removed_at", "finished_at"),  # pruning's search
        Index("ix_jobs_state_lease_expires_at", "state", "lease_expires_at"),
        Index("ix_jobs_user_id_created_at", "user_id", "created_at"),
        Index("ix_jobs_guild_id_user_id_created_at", "guild_id", "user_id", "created_at"),
    )


class ImageRow(Base):
    __tablename__ = "images"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    index: Mapped[int] = mapped_column(Integer)  # position in the job, 0-3
    seed: Mapped[int] = mapped_column(BigInteger)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(String(255))  # relative to the image folder, with forward slashes
    safety_score: Mapped[float | None] = mapped_column(Float)  # P(unsafe) from the classifier; None: unscored
    created_at: Mapped[datetime]

    __table_args__ = (UniqueConstraint("job_id", "index"),)


class GuildSettingsRow(Base):
    """Per-guild overrides; a NULL column means "use the global default"."""

    __tablename__ = "guild_settings"

    guild_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    daily_quota: Mapped[int | None] = mapped_column(Integer)
    rate_per_minute: Mapped[int | None] = mapped_column(Integer)
    rate_burst: Mapped[int | None] = mapped_column(Integer)
    max_concurrent: Mapped[int | None] = mapped_column(Integer)
    max_steps: Mapped[int | None] = mapped_column(Integer)
    buttons_for_everyone: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Jobs use the few-step fast model unless a member asks for the full one (`--quality`).
    fast_by_default: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    safety_mode: Mapped[str | None] = mapped_column(String(16))  # block | spoiler | age-restricted
    safety_threshold: Mapped[float | None] = mapped_column(Float)
    updated_at: Mapped[datetime]


class QuotaOverrideRow(Base):
    __tablename__ = "quota_overrides"

    guild_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    daily_quota: Mapped[int | None] = mapped_column(Integer)  # NULL: the guild's quota
    usage_reset_at: Mapped[datetime | None]  # usage counts only jobs created at or after this
    set_by: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime]


class BanRow(Base):
    __tablename__ = "bans"

    guild_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    reason: Mapped[str] = mapped_column(Text)
    banned_by: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime]


class BlockedWordRow(Base):
    __tablename__ = "blocked_words"

    guild_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    word: Mapped[str] = mapped_column(String(100), primary_key=True)
    added_by: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime]


class ModeratorActionRow(Base):
    __tablename__ = "moderator_actions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    guild_id: Mapped[int] = mapped_column(BigInteger)
    moderator_id: Mapped[int] = mapped_column(BigInteger)
    action: Mapped[str] = mapped_column(String(64))
    target_user_id: Mapped[int | None] = mapped_column(BigInteger)
    details: Mapped[str] = mapped_column(Text)  # a JSON object
    created_at: Mapped[datetime]

    __table_args__ = (Index("ix_moderator_actions_guild_id_created_at", "guild_id", "created_at"),)


class DeliveryRow(Base):
    """Where a Discord job's status message lives, and whether its result has been delivered."""

    __tablename__ = "deliveries"

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    channel_id: Mapped[int] = mapped_column(BigInteger)
    message_id: Mapped[int | None] = mapped_column(BigInteger)  # the status message
    interaction_token: Mapped[str | None] = mapped_column(Text)  # a secret; cleared once delivered
    token_expires_at: Mapped[datetime | None]
    upload_limit: Mapped[int] = mapped_column(Integer)
    attempted_at: Mapped[datetime | None]  # a new message was about to be sent
    delivered_at: Mapped[datetime | None]
    result_channel_id: Mapped[int | None] = mapped_column(BigInteger)
    result_message_id: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime]

    __table_args__ = (Index("ix_deliveries_delivered_at", "delivered_at"),)


class PostedMessageRow(Base):
    """A message of the bot's that shows a job's images, so reactions on it can be traced to the image."""

    __tablename__ = "posted_messages"

    message_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    channel_id: Mapped[int] = mapped_column(BigInteger)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    image_index: Mapped[int | None] = mapped_column(Integer)  # None: the whole grid
    created_at: Mapped[datetime]

    __table_args__ = (Index("ix_posted_messages_job_id", "job_id"),)  # a job's messages, to delete them
