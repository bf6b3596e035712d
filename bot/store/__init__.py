"""The durable store: jobs, images and moderation settings in SQLite or PostgreSQL, images as PNG files.

SQL stays inside this package (and `migrations/`); callers get domain objects and the records below.
"""

from __future__ import annotations

from bot.store.database import create_engine, downgrade, migrate, schema_is_current
from bot.store.errors import ImageNotFound, StoreUnavailable
from bot.store.images import ImageFiles
from bot.store.records import (
    Admission,
    AdmissionFacts,
    Ban,
    Completion,
    GuildSettings,
    JobResult,
    Lease,
    ModeratorAction,
    QuotaOverride,
    RecoveryReport,
    StoredImage,
)
from bot.store.repository import GuildSettingsChanges, JobStore

__all__ = [
    "Admission",
    "AdmissionFacts",
    "Ban",
    "Completion",
    "GuildSettings",
    "GuildSettingsChanges",
    "ImageFiles",
    "ImageNotFound",
    "JobResult",
    "JobStore",
    "Lease",
    "ModeratorAction",
    "QuotaOverride",
    "RecoveryReport",
    "StoreUnavailable",
    "StoredImage",
    "create_engine",
    "downgrade",
    "migrate",
    "schema_is_current",
]
