"""/imagine and its buttons end to end: real discord.py client, fake Discord, tiny SDXL pipeline."""

from __future__ import annotations

from tests.discord.conftest import Harness, custom_ids


async def test_imagine_posts_a_grid_with_buttons(harness: Harness) -> None:
    """/imagine is deferred at once, then the original response becomes the grid with U/V/🔄 buttons."""
    async with harness.running():
        handle = await harness.slash(harness.alice, "imagine", {"prompt": "a lighthouse --ar 16:9 --seed 42"})
        response = await handle.wait_response()
        assert response.type == 5
        message = await harness.result_of(handle)
        job_id = int(message.embeds[0]["footer"]["text"].rsplit("#", 1)[1])
        assert custom_ids(message) == [
            *(f"ib:u:{job_id}:{i}" for i in range(4)),
            f"ib:r:{job_id}",
            *(f"ib:v:{job_id}:{i}" for i in range(4)),
        ]
        fields = {f["name"]: f["value"] for f in message.embeds[0]["fields"]}
        assert fields["Seed"] == "42"
        assert fields["Size"].startswith("80×48")
        [attachment] = message.attachments
        assert attachment.data.startswith(b"\x89PNG")
        assert message.embeds[0]["image"]["url"].endswith(f"/{attachment.filename}")
        assert len(message.history) >= 2  # queued status first, then the result
    assert not harness.fake.limit_violations
