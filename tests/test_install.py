"""The install: scripts/install refuses an old Python before it creates anything, and the lock files
(requirements/, written by scripts/lock) hold what pyproject.toml asks for, hashed, without torch, with the
development tools only in dev.txt. scripts/check-wheel (run by CI) installs the wheel from the lock."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)")


def _lock(name: str) -> dict[str, str]:
    """The pins of requirements/<name>.txt, by canonical name; every pin must carry a hash."""
    pins: dict[str, str] = {}
    lines = (REPO / "requirements" / f"{name}.txt").read_text().splitlines()
    for number, line in enumerate(lines):
        match = PIN.match(line)
        if match:
            assert line.rstrip().endswith("\\"), line
            assert "--hash=sha256:" in lines[number + 1], line
            pins[canonicalize_name(match[1])] = match[2]
    return pins


def _pyproject() -> dict[str, list[Requirement]]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {
        "runtime": [Requirement(line) for line in project["dependencies"]],
        "dev": [Requirement(line) for line in project["optional-dependencies"]["dev"]],
    }


def _fake_python(path: Path, version: str) -> Path:
    """An interpreter that answers the install script's two questions as Python `version` would."""
    path.parent.mkdir(parents=True, exist_ok=True)
    major, minor = (int(part) for part in version.split(".")[:2])
    path.write_text(
        "#!/bin/sh\n"
        'case "$2" in\n'
        f"  *version_info*) exit {int((major, minor) < (3, 11))} ;;\n"
        f"  *python_version*) echo {version} ;;\n"
        "  *) exit 1 ;;\n"
        "esac\n"
    )
    path.chmod(0o755)
    return path


def _install_copy(tmp_path: Path) -> Path:
    """scripts/install in a folder of its own (it works on the folder above its own)."""
    (tmp_path / "scripts").mkdir()
    (tmp_path / "requirements").mkdir()
    shutil.copy2(REPO / "scripts" / "install", tmp_path / "scripts" / "install")
    shutil.copy2(REPO / "requirements" / "torch.txt", tmp_path / "requirements" / "torch.txt")
    return tmp_path / "scripts" / "install"


def _run(script: Path, python: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(script), *args],
        env={**os.environ, "PYTHON": python},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_install_refuses_an_old_python_before_making_the_venv(tmp_path: Path) -> None:
    """PYTHON at 3.10: exit 2 with one line naming the version found and what is needed; no .venv."""
    script = _install_copy(tmp_path)
    result = _run(script, str(_fake_python(tmp_path / "old" / "python3", "3.10.13")))
    assert result.returncode == 2
    assert "needs Python 3.11 or newer" in result.stderr
    assert "is Python 3.10.13" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / ".venv").exists()


def test_install_refuses_a_missing_python(tmp_path: Path) -> None:
    """PYTHON naming nothing: exit 2, and the message says it is not there."""
    result = _run(_install_copy(tmp_path), str(tmp_path / "no-such-python"))
    assert result.returncode == 2
    assert f"there is no {tmp_path / 'no-such-python'} here" in result.stderr
    assert not (tmp_path / ".venv").exists()


def test_install_refuses_a_venv_made_with_an_old_python(tmp_path: Path) -> None:
    """An existing .venv of Python 3.10 is named, with what to do, before anything is installed in it."""
    script = _install_copy(tmp_path)
    _fake_python(tmp_path / ".venv" / "bin" / "python", "3.10.13")
    result = _run(script, "python3")
    assert result.returncode == 2
    assert ".venv was made with Python 3.10.13: remove .venv" in result.stderr
    assert sorted(path.name for path in (tmp_path / ".venv").iterdir()) == ["bin"]


def test_install_takes_only_dev_as_a_mode(tmp_path: Path) -> None:
    """A mistyped mode is refused rather than taken as the runtime install."""
    result = _run(_install_copy(tmp_path), "python3", "--devel")
    assert result.returncode == 2
    assert "usage: scripts/install [--dev]" in result.stderr


@pytest.mark.parametrize("kind", ["runtime", "dev"])
def test_the_lock_holds_every_dependency_at_a_version_pyproject_accepts(kind: str) -> None:
    """Each dependency of pyproject.toml (the dev extra's too, in dev.txt) is pinned, hashed, within its
    range; torch alone is left to scripts/install. A range changed without `scripts/lock` fails here."""
    pins = _lock(kind)
    wanted = _pyproject()["runtime"] + (_pyproject()["dev"] if kind == "dev" else [])
    for requirement in wanted:
        name = canonicalize_name(requirement.name)
        if name == "torch":
            continue
        assert name in pins, f"{requirement} is not in requirements/{kind}.txt: run scripts/lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"requirements/{kind}.txt pins {name}=={pins[name]}, outside {requirement}: run scripts/lock"
        )


def test_the_lock_leaves_torch_and_its_cuda_libraries_out() -> None:
    """torch comes from scripts/install (its CPU or CUDA build); a lock with nvidia-* would install
    gigabytes of CUDA libraries on every machine."""
    for kind in ("runtime", "dev"):
        names = set(_lock(kind))
        assert "torch" not in names
        assert not {name for name in names if name.startswith("nvidia-") or name == "triton"}
    torch_pin = (REPO / "requirements" / "torch.txt").read_text()
    assert re.search(r"^torch==\d+\.\d+\.\d+$", torch_pin, re.MULTILINE)


def test_dev_lock_keeps_the_runtime_pins_and_the_runtime_lock_has_no_dev_tools() -> None:
    """Tests run exactly the versions the bot runs with; the runtime install carries no dev tools."""
    runtime, dev = _lock("runtime"), _lock("dev")
    assert {name: dev.get(name) for name in runtime} == runtime
    tools = {canonicalize_name(requirement.name) for requirement in _pyproject()["dev"]}
    assert tools <= set(dev)
    assert not tools & set(runtime)
