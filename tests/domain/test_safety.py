"""The output-safety policy: each server's mode and threshold decide how a scored result is shown."""

from __future__ import annotations

import pytest

from bot.domain.safety import SafetyMode, SafetyPolicy, Shown

SAFE = [0.01, 0.2, 0.0, 0.59]
ONE_UNSAFE = [0.01, 0.9, 0.0, 0.1]


@pytest.mark.parametrize("mode", list(SafetyMode))
@pytest.mark.parametrize("nsfw_channel", [False, True])
def test_safe_results_are_shown_plainly_in_every_mode(mode: SafetyMode, nsfw_channel: bool) -> None:
    policy = SafetyPolicy(mode, 0.6)
    assert policy.shown(SAFE, age_restricted_channel=nsfw_channel, released=False) is Shown.PLAIN


@pytest.mark.parametrize(
    ("mode", "nsfw_channel", "expected"),
    [
        (SafetyMode.BLOCK, False, Shown.HELD),
        (SafetyMode.BLOCK, True, Shown.HELD),
        (SafetyMode.SPOILER, False, Shown.SPOILER),
        (SafetyMode.SPOILER, True, Shown.SPOILER),
        (SafetyMode.AGE_RESTRICTED, False, Shown.SPOILER),
        (SafetyMode.AGE_RESTRICTED, True, Shown.PLAIN),
    ],
)
def test_one_unsafe_image_decides_for_the_result(
    mode: SafetyMode, nsfw_channel: bool, expected: Shown
) -> None:
    policy = SafetyPolicy(mode, 0.6)
    assert policy.shown(ONE_UNSAFE, age_restricted_channel=nsfw_channel, released=False) is expected


def test_the_threshold_is_inclusive_and_per_policy() -> None:
    assert SafetyPolicy(SafetyMode.SPOILER, 0.9).flagged(ONE_UNSAFE)
    assert not SafetyPolicy(SafetyMode.SPOILER, 0.91).flagged(ONE_UNSAFE)


def test_a_released_image_is_spoilered_outside_age_restricted_channels() -> None:
    policy = SafetyPolicy(SafetyMode.BLOCK, 0.6)
    assert policy.shown(ONE_UNSAFE, age_restricted_channel=False, released=True) is Shown.SPOILER
    assert policy.shown(ONE_UNSAFE, age_restricted_channel=True, released=True) is Shown.PLAIN


def test_an_unscored_image_is_held_only_where_the_server_blocks() -> None:
    unscored = [None, 0.1, 0.1, 0.1]
    assert SafetyPolicy(SafetyMode.BLOCK).shown(unscored, age_restricted_channel=False, released=False) is (
        Shown.HELD
    )
    for mode in (SafetyMode.SPOILER, SafetyMode.AGE_RESTRICTED):
        assert SafetyPolicy(mode).shown(unscored, age_restricted_channel=False, released=False) is Shown.PLAIN


@pytest.mark.parametrize("threshold", [0.0, -0.1, 1.01])
def test_a_threshold_outside_0_to_1_is_refused(threshold: float) -> None:
    with pytest.raises(ValueError, match="threshold"):
        SafetyPolicy(SafetyMode.SPOILER, threshold)
