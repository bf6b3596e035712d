"""One loaded tiny SDXL backend for the whole session: loading is the slow part, rendering takes ~0.1 s."""

from __future__ import annotations

from pathlib import Path

import pytest

from inference.pipeline import DiffusersBackend


@pytest.fixture(scope="session")
def backend(tiny_model_path: Path) -> DiffusersBackend:
    # CPU float32 explicitly, so the results are exact and the same on a machine that has a GPU.
    loaded = DiffusersBackend(str(tiny_model_path), device="cpu", dtype="float32")
    loaded.load()
    return loaded
