"""IMAGE_RETENTION_DAYS: how long images are kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.runtime.settings import SettingsError, load_settings

ENV_EXAMPLE = Path(__file__).parents[2] / ".env.example"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no .env here
    monkeypatch.delenv("IMAGE_RETENTION_DAYS", raising=False)


def test_thirty_days_by_default_and_zero_for_ever(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default keeps images 30 days; 0 is allowed (kept forever)."""
    assert load_settings().image_retention_days == 30
    monkeypatch.setenv("IMAGE_RETENTION_DAYS", "0")
    assert load_settings().image_retention_days == 0


@pytest.mark.parametrize("value", ["-1", "soon", "1.5"])
def test_a_bad_value_stops_start_up_naming_it(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("IMAGE_RETENTION_DAYS", value)
    with pytest.raises(SettingsError, match=r"^Setting IMAGE_RETENTION_DAYS is invalid: "):
        load_settings()


def test_env_example_lists_it() -> None:
    assert "\nIMAGE_RETENTION_DAYS=30\n" in ENV_EXAMPLE.read_text(encoding="utf-8")
