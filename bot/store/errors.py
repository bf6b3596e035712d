"""Errors raised by the store."""

from __future__ import annotations

from bot.domain.errors import ImagineError


class StoreUnavailable(Exception):
    """The database cannot be opened or migrated; `str(error)` is one line an operator can act on."""


class ImageNotFound(ImagineError):
    def __init__(self, image_id: int) -> None:
        super().__init__(f"I can't find image #{image_id}; it may have been deleted.")
        self.image_id = image_id
