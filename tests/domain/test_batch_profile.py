"""Batch profiles: the budget chosen from measured images/s, the file format, and WxH size lists."""

from __future__ import annotations

import json

import pytest

from bot.domain.batch_profile import (
    DEFAULT_TOLERANCE,
    BatchProfile,
    BucketThroughput,
    ProfileError,
    choose_batch_size,
    image_budgets,
    parse_sizes,
)


def profile(*buckets: BucketThroughput) -> BatchProfile:
    return BatchProfile(
        device="cuda:0",
        device_name="NVIDIA H100 80GB HBM3",
        model="sdxl-random",
        dtype="bfloat16",
        optimizations="fuse_qkv, channels_last, compile",
        steps=30,
        guidance=5.0,
        buckets=buckets,
    )


def test_the_smallest_batch_within_the_tolerance_of_the_best_wins() -> None:
    """Compute-bound at 1024²: 4 images/call is within 3% of the best (8), so 4 is chosen."""
    assert DEFAULT_TOLERANCE == 0.03
    assert choose_batch_size({1: 0.40, 2: 0.42, 4: 0.435, 8: 0.44}) == 4


def test_a_batch_that_pays_more_than_the_tolerance_is_taken() -> None:
    """Small images scale with the batch: the biggest size is the only one near the best."""
    assert choose_batch_size({1: 2.0, 2: 3.8, 4: 7.0, 8: 12.0}) == 8


def test_a_flat_curve_gives_batch_one() -> None:
    """No gain from batching at all: one image per call keeps latency lowest."""
    assert choose_batch_size({1: 0.5, 2: 0.5, 4: 0.495, 8: 0.49}) == 1


def test_a_slower_large_batch_is_never_chosen() -> None:
    """Memory pressure can make the largest batch slower; the best one is chosen, not the largest."""
    assert choose_batch_size({1: 1.0, 2: 1.8, 4: 2.0, 8: 1.5}) == 4


def test_tolerance_is_a_parameter() -> None:
    """With a zero tolerance only the best counts; with 10%, a smaller batch within 10% wins."""
    rates = {1: 0.9, 2: 0.95, 4: 1.0}
    assert choose_batch_size(rates, 0.0) == 4
    assert choose_batch_size(rates, 0.10) == 1
    with pytest.raises(ValueError, match="Tolerance"):
        choose_batch_size(rates, 1.0)
    with pytest.raises(ValueError, match="No batch sizes"):
        choose_batch_size({})


def test_budgets_per_bucket() -> None:
    """Each measured (width, height) gets its own budget; nothing else appears."""
    budgets = image_budgets(
        profile(
            BucketThroughput(1024, 1024, {1: 0.40, 2: 0.42, 4: 0.435, 8: 0.44}),
            BucketThroughput(1344, 768, {1: 0.40, 2: 0.44, 4: 0.45}),
        )
    )
    assert budgets == {(1024, 1024): 4, (1344, 768): 2}


def test_profile_round_trips_through_json() -> None:
    """What the bench writes is what the bot reads."""
    original = profile(
        BucketThroughput(1024, 1024, {1: 0.4, 8: 0.44}), BucketThroughput(2048, 2048, {1: 0.09})
    )
    text = original.to_json()
    written = json.loads(text)["buckets"][0]
    assert written == {"width": 1024, "height": 1024, "images_per_s": {"1": 0.4, "8": 0.44}}
    assert BatchProfile.from_json(text) == original
    assert "sdxl-random on NVIDIA H100 80GB HBM3" in original.describe()


def bucket(rates: object, width: object = 64) -> dict[str, object]:
    return {"width": width, "height": 64, "images_per_s": rates}


def document(*buckets: dict[str, object]) -> str:
    return json.dumps({"version": 1, "buckets": list(buckets)})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "not JSON"),
        ("[]", "not a JSON object"),
        ('{"version": 2, "buckets": []}', "version 2"),
        (document(), "no buckets"),
        (document(bucket({"1": 1}, width=0)), "positive integer"),
        (document(bucket({})), "no images_per_s"),
        (document(bucket({"x": 1})), "'x' is not a number"),
        (document(bucket({"0": 1})), "not positive"),
        (document(bucket({"1": -1})), "-1 for batch 1"),
        (document(bucket({"1": "fast"})), "'fast'"),
        (document(bucket({"1": 1}), bucket({"1": 2})), "listed twice"),
    ],
)
def test_malformed_profiles_are_refused_with_the_reason(text: str, message: str) -> None:
    """A broken file is a ProfileError that says what is wrong, never a crash deeper in."""
    with pytest.raises(ProfileError, match=message):
        BatchProfile.from_json(text)


def test_sizes_are_parsed() -> None:
    """WxH lists, with × or x, spaces and duplicates tolerated; anything else names the bad item."""
    assert parse_sizes("1024x1024, 1344×768,1024X1024") == ((1024, 1024), (1344, 768))
    with pytest.raises(ValueError, match="'16:9' is not a size"):
        parse_sizes("1024x1024,16:9")
    with pytest.raises(ValueError, match="zero side"):
        parse_sizes("0x64")
    with pytest.raises(ValueError, match="lists no size"):
        parse_sizes(" , ")
