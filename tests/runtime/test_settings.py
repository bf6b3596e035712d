"""Settings for measured batching and warm-up: BATCH_PROFILE, WARM_UP, WARM_UP_BUCKETS."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.domain.batch_profile import BatchProfile, BucketThroughput
from bot.runtime.settings import DEFAULT_BATCH_PROFILE, SettingsError, load_settings

PROFILE = BatchProfile(
    device="cpu",
    device_name="test CPU",
    model="tiny",
    dtype="float32",
    optimizations="none",
    steps=2,
    guidance=5.0,
    buckets=(
        BucketThroughput(64, 64, {1: 10.0, 2: 19.0, 4: 30.0}),
        BucketThroughput(128, 128, {1: 3.0, 2: 3.0}),
    ),
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Run in an empty folder (no data/batch-profile.json) with none of these variables set."""
    monkeypatch.chdir(tmp_path)
    for name in ("BATCH_PROFILE", "WARM_UP", "WARM_UP_BUCKETS", "COMPILE", "MAX_BATCH_IMAGES"):
        monkeypatch.delenv(name, raising=False)


def test_no_profile_keeps_max_batch_images_everywhere() -> None:
    """Without a file every size batches up to MAX_BATCH_IMAGES."""
    settings = load_settings(_env_file=None)
    assert settings.batch_profile_path() is None
    assert settings.batching().size_budgets == {}


def test_the_default_file_is_used_when_it_exists(monkeypatch: pytest.MonkeyPatch) -> None:
    """data/batch-profile.json (what `bench --profile-out` suggests) is read without any setting."""
    DEFAULT_BATCH_PROFILE.parent.mkdir(parents=True)
    DEFAULT_BATCH_PROFILE.write_text(PROFILE.to_json())
    settings = load_settings(_env_file=None, max_batch_images=8)
    assert settings.batch_profile_path() == DEFAULT_BATCH_PROFILE
    assert settings.batching().size_budgets == {(64, 64): 4, (128, 128): 1}
    monkeypatch.setenv("BATCH_PROFILE", "none")
    assert load_settings(_env_file=None).batching().size_budgets == {}


def test_a_named_profile_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """BATCH_PROFILE names the file; its budgets are the smallest batch near the best images/s."""
    path = tmp_path / "h100.json"
    path.write_text(PROFILE.to_json())
    monkeypatch.setenv("BATCH_PROFILE", str(path))
    settings = load_settings(_env_file=None)
    assert settings.load_batch_profile() == PROFILE
    assert settings.batching().size_budgets == {(64, 64): 4, (128, 128): 1}


def test_a_missing_named_profile_stops_start_up_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """A file named explicitly must be there: one line says which and why."""
    monkeypatch.setenv("BATCH_PROFILE", "nowhere/profile.json")
    with pytest.raises(SettingsError) as raised:
        load_settings(_env_file=None)
    message = str(raised.value)
    assert message.startswith("Setting BATCH_PROFILE is invalid: nowhere/profile.json cannot be read")
    assert "\n" not in message


def test_a_broken_profile_stops_start_up_with_the_reason() -> None:
    """Also the default file: a broken one is reported rather than silently ignored."""
    DEFAULT_BATCH_PROFILE.parent.mkdir(parents=True)
    DEFAULT_BATCH_PROFILE.write_text('{"version": 1, "buckets": []}')
    with pytest.raises(SettingsError, match=r"data/batch-profile.json is not a batch profile .*no buckets"):
        load_settings(_env_file=None)


def test_warm_up_follows_compile_unless_told() -> None:
    """auto warms up exactly when COMPILE=on; on and off decide by themselves."""
    assert not load_settings(_env_file=None).warms_up
    assert load_settings(_env_file=None, compile="on").warms_up
    assert not load_settings(_env_file=None, compile="on", warm_up="off").warms_up
    assert load_settings(_env_file=None, warm_up="on").warms_up


def test_warm_up_buckets_are_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    """WARM_UP_BUCKETS is a WxH list; anything else stops start-up naming the setting and the item."""
    assert load_settings(_env_file=None).warm_up_sizes() is None
    settings = load_settings(_env_file=None, warm_up_buckets="1024x1024, 2048x2048")
    assert settings.warm_up_sizes() == ((1024, 1024), (2048, 2048))
    monkeypatch.setenv("WARM_UP_BUCKETS", "16:9")
    with pytest.raises(SettingsError, match=r"Setting WARM_UP_BUCKETS is invalid: .*'16:9' is not a size"):
        load_settings(_env_file=None)
