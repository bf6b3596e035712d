"""Persistent buttons: custom_ids carry the job and image, fit Discord's limits, and parse back."""

from __future__ import annotations

import pytest

from bot.discord_app.components import DYNAMIC_ITEMS, cancel_view, grid_view, single_view, upscale_view

BIGGEST_JOB = 2**63 - 1


def _parse(custom_id: str) -> tuple[type, int, int] | None:
    for item in DYNAMIC_ITEMS:
        match = item.__discord_ui_compiled_template__.fullmatch(custom_id)  # type: ignore[attr-defined]
        if match:
            return item, int(match["job"]), int(match.groupdict().get("index") or 0)
    return None


def test_every_button_parses_back_to_its_job_and_image() -> None:
    """Each custom_id of a grid, a single image, an upscale and a status message names its own job and
    image."""
    views = (
        grid_view(BIGGEST_JOB),
        single_view(BIGGEST_JOB, 3),
        upscale_view(BIGGEST_JOB),
        cancel_view(BIGGEST_JOB),
    )
    for view in views:
        for button in view.children:
            custom_id = button.custom_id  # type: ignore[attr-defined]
            assert len(custom_id) <= 100
            parsed = _parse(custom_id)
            assert parsed is not None, custom_id
            assert parsed[1] == BIGGEST_JOB
    assert [_parse(b.custom_id)[2] for b in grid_view(5).children if "ib:v:" in b.custom_id] == [0, 1, 2, 3]  # type: ignore[attr-defined,index]


@pytest.mark.parametrize(
    "forged",
    ["ib:v:12:4", "ib:v:-1:0", "ib:u:12", "ib:r:12:0", "xx:v:1:0", "ib:v:1:0:0", "ib:d:1:0", "ib:d:"],
)
def test_forged_custom_ids_match_no_button(forged: str) -> None:
    """An image index outside 0–3, a missing or extra part, or another prefix is not a button of ours."""
    assert _parse(forged) is None


def test_every_result_has_a_delete_button_within_discords_rows() -> None:
    """🗑 (`ib:d:<job>`) is on grids, single images and upscales; no row holds more than 5 buttons."""
    for view in (grid_view(7), single_view(7, 2), upscale_view(7)):
        ids = [button.custom_id for button in view.children]  # type: ignore[attr-defined]
        assert "ib:d:7" in ids
        rows = view.to_components()
        assert len(rows) <= 5
        assert all(len(row["components"]) <= 5 for row in rows)
    assert [c["custom_id"] for c in grid_view(7).to_components()[1]["components"]][-1] == "ib:d:7"
