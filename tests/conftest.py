"""Fixtures shared across the test tree."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.postgres import pg_url, private_postgres  # noqa: F401  (fixtures)


@pytest.fixture(autouse=True)
def _no_batch_profile_from_the_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read ./data/batch-profile.json when it exists (the README has operators write it there);
    tests must not change with a profile measured in the developer's checkout. Tests of BATCH_PROFILE
    set or remove the variable themselves."""
    monkeypatch.setenv("BATCH_PROFILE", "none")


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight SDXL pipeline folder (64 px native), built once per test session."""
    from inference.tiny import make_tiny_model  # imports torch: only for the tests that ask for it

    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny-sdxl")


@pytest.fixture(scope="session")
def tiny_backend(tiny_model_path: Path) -> object:
    """The tiny pipeline loaded once for every test that renders through the real diffusers code."""
    from inference.pipeline import DiffusersBackend

    backend = DiffusersBackend(str(tiny_model_path), device="cpu", dtype="float32")
    backend.load()
    return backend
