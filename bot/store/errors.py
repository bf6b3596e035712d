"""Errors raised by the store."""

from __future__ import annotations

from bot.domain.errors import ImagineError


class StoreUnavailable(Exception):
    """The database cannot be opened or migrated; `str(error)` is one line an operator can act on."""


class ImageNotFound(ImagineError):
    def __init__(self, image_id: int) -> None:
        super().__init__(f"I can't find image #{image_id}; it may have been deleted.")
        self.image_id = image_id


class DatabaseUnreachable(ImagineError):
    """The database went away during an operation (a restart, a lost connection) or stayed away longer
    than the store waits. Its transaction was rolled back (or, if the connection died during the COMMIT
    itself, possibly not: a rare case that a member's retry may turn into a second job)."""

    def __init__(self) -> None:
        super().__init__(
            "My database isn't answering right now (it may be restarting), so nothing was changed. "
            "Please try again in a moment."
        )
