"""Image files: PNGs in a folder, one subfolder per job. The database keeps the relative paths."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from PIL import Image

from bot.domain.records import JobResult

JOBS_PER_FOLDER = 10_000  # job folders per bucket folder, so no folder grows without bound


class ImageFiles:
    """A folder of PNG files. Blocking I/O: async callers run these methods in a thread.

    OSError (disk full, permissions) is raised as is, for the caller to report.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @staticmethod
    def relative_path(job_id: int, index: int) -> str:
        """`jobs/00/0000123/0.png`: bucket folder (job id // 10,000), job folder, position in the job."""
        if job_id < 0 or index < 0:
            raise ValueError(f"bad image address: job {job_id}, index {index}")
        return f"jobs/{job_id // JOBS_PER_FOLDER:02d}/{job_id:07d}/{index}.png"

    def save(self, job_id: int, index: int, image: Image.Image) -> str:
        """Write the image as PNG and return its path relative to the root.

        The file appears whole or not at all: it is written to a temporary file in the same folder and
        renamed over the target. Its mode follows the process's umask (0644 under the usual 022), so
        another account may read a shared IMAGE_DIR as it reads any file this user makes.
        """
        relative = self.relative_path(job_id, index)
        target = self._resolve(relative)
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temp_name = _create_temporary(target)
        try:
            with os.fdopen(handle, "wb") as file:
                # Level 1 encodes a 1024² image about 3× faster than the default 6 for files about 40%
                # larger: storing then keeps up with the GPU (benchmarks/store_overlap.py).
                image.save(file, format="PNG", compress_level=1)
            os.replace(temp_name, target)
        except BaseException:
            Path(temp_name).unlink(missing_ok=True)
            raise
        return relative

    def save_results(self, results: Sequence[JobResult]) -> list[list[str]]:
        """Each job's image files, in job order; on any error none of them is left behind."""
        paths: list[list[str]] = []
        try:
            for result in results:
                paths.append([])
                for index, image in enumerate(result.images):
                    paths[-1].append(self.save(result.job_id, index, image))
        except BaseException:
            self.remove_all([path for job_paths in paths for path in job_paths])
            raise
        return paths

    def load(self, path: str) -> Image.Image:
        """The image at `path`, fully read (the file is closed) and in RGB."""
        with Image.open(self._resolve(path)) as image:
            image.load()
            return image.convert("RGB")

    def open_bytes(self, path: str) -> bytes:
        """The PNG file's bytes, e.g. to attach to a message."""
        return self._resolve(path).read_bytes()

    def remove(self, path: str) -> None:
        """Delete a file if it is there (cleanup after a job turned out to be cancelled)."""
        self._resolve(path).unlink(missing_ok=True)

    def remove_all(self, paths: Sequence[str]) -> None:
        """Delete these files, as far as the disk lets us (cleanup never raises)."""
        for path in paths:
            with contextlib.suppress(OSError):
                self.remove(path)

    def usage(self, paths: Sequence[str]) -> tuple[int, int]:
        """How many of these files exist, and their size in bytes together."""
        files = size = 0
        for path in paths:
            try:
                size += self._resolve(path).stat().st_size
            except OSError:
                continue
            files += 1
        return files, size

    def remove_measured(self, paths: Sequence[str]) -> tuple[int, int]:
        """Delete these files (as `remove_all`) and their folders left empty; the files and bytes that
        were there before."""
        found = self.usage(paths)
        self.remove_all(paths)
        for folder in {self._resolve(path).parent for path in paths}:
            with contextlib.suppress(OSError):
                folder.rmdir()  # the job's folder, once empty
        return found

    def _resolve(self, path: str) -> Path:
        relative = PurePosixPath(path)
        if relative.is_absolute() or ".." in relative.parts or not relative.parts:
            raise ValueError(f"image path {path!r} is not inside the image folder")
        return self.root.joinpath(*relative.parts)


def _create_temporary(target: Path) -> tuple[int, str]:
    """A new, empty temporary file beside `target`, open for writing: (descriptor, name).

    Unlike tempfile.mkstemp (always 0600), the file is created with mode 0666 and the kernel applies the
    umask, as for any file the process opens: no need to read the umask, which Python can only do by
    changing it. O_EXCL makes the name ours alone, as in mkstemp.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        name = str(target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(name, flags, 0o666), name
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {target}")
