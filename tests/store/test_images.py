"""ImageFiles: PNGs in a folder, written whole or not at all."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PIL import Image

from bot.store import ImageFiles


def test_save_load_round_trip(tmp_path: Path) -> None:
    """The path is relative, bucketed by job; the image comes back fully loaded, in RGB."""
    files = ImageFiles(tmp_path)
    image = Image.new("RGBA", (8, 6), (10, 20, 30, 128))
    path = files.save(123, 2, image)
    assert path == "jobs/00/0000123/2.png"
    loaded = files.load(path)
    assert (loaded.mode, loaded.size, loaded.getpixel((0, 0))) == ("RGB", (8, 6), (10, 20, 30))
    assert files.open_bytes(path) == (tmp_path / path).read_bytes()
    assert files.open_bytes(path).startswith(b"\x89PNG\r\n\x1a\n")


def test_layout_buckets() -> None:
    assert ImageFiles.relative_path(1_234_567, 0) == "jobs/123/1234567/0.png"
    assert ImageFiles.relative_path(9_999, 3) == "jobs/00/0009999/3.png"
    assert ImageFiles.relative_path(10_000, 3) == "jobs/01/0010000/3.png"
    with pytest.raises(ValueError, match="bad image address"):
        ImageFiles.relative_path(-1, 0)


def test_overwrite_is_atomic_and_leaves_no_temp_files(tmp_path: Path) -> None:
    files = ImageFiles(tmp_path)
    files.save(1, 0, Image.new("RGB", (4, 4), (255, 0, 0)))
    path = files.save(1, 0, Image.new("RGB", (4, 4), (0, 0, 255)))
    assert files.load(path).getpixel((1, 1)) == (0, 0, 255)
    assert [p.name for p in (tmp_path / path).parent.iterdir()] == ["0.png"]


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    """An encoder error (here: a mode PNG cannot hold) leaves neither the file nor a temp file."""
    files = ImageFiles(tmp_path)
    with pytest.raises(OSError, match="cannot write mode CMYK as PNG"):
        files.save(5, 0, Image.new("CMYK", (4, 4)))
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_oserror_surfaces(tmp_path: Path) -> None:
    """A root that cannot hold folders: the OSError reaches the caller."""
    (tmp_path / "root").write_text("not a folder")
    with pytest.raises(OSError):  # noqa: PT011 - which OSError depends on the platform
        ImageFiles(tmp_path / "root").save(1, 0, Image.new("RGB", (2, 2)))
    with pytest.raises(FileNotFoundError):
        ImageFiles(tmp_path).load("jobs/00/0000001/0.png")


@pytest.mark.parametrize("path", ["../x.png", "/etc/passwd", "jobs/../../x.png", ""])
def test_paths_stay_inside_the_folder(tmp_path: Path, path: str) -> None:
    with pytest.raises(ValueError, match="not inside the image folder"):
        ImageFiles(tmp_path).open_bytes(path)


def test_usage_and_remove_measured(tmp_path: Path) -> None:
    """Usage counts the files there and their bytes; removing them also drops each job's emptied folder,
    and a file already gone counts for nothing."""
    files = ImageFiles(tmp_path)
    paths = [files.save(7, index, Image.new("RGB", (8, 8), (index, 0, 0))) for index in range(2)]
    other = files.save(8, 0, Image.new("RGB", (8, 8)))
    size = sum((tmp_path / path).stat().st_size for path in paths)
    missing = "jobs/00/0000009/0.png"
    assert files.usage([*paths, missing]) == (2, size)
    assert files.remove_measured([*paths, missing]) == (2, size)
    assert not (tmp_path / paths[0]).parent.exists()
    assert (tmp_path / other).exists()
    assert files.remove_measured(paths) == (0, 0)


@pytest.fixture
def umask() -> Iterator[Callable[[int], None]]:
    """Set the process's umask for one test; the old one comes back afterwards."""
    old = os.umask(0o022)
    try:
        yield lambda mask: os.umask(mask)
    finally:
        os.umask(old)


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_saved_files_follow_the_umask(
    tmp_path: Path, umask: Callable[[int], None], mask: int, mode: int
) -> None:
    """A PNG is created as any file the process writes: 0666 less the umask (0644 under the usual 022),
    so another account can read a shared IMAGE_DIR; never mkstemp's 0600. An overwrite gets it too."""
    umask(mask)
    files = ImageFiles(tmp_path)
    path = files.save(3, 0, Image.new("RGB", (4, 4)))
    assert stat.S_IMODE((tmp_path / path).stat().st_mode) == mode
    files.save(3, 0, Image.new("RGB", (4, 4), (1, 2, 3)))
    assert stat.S_IMODE((tmp_path / path).stat().st_mode) == mode
    assert [p.name for p in (tmp_path / path).parent.iterdir()] == ["0.png"]
