"""The `imagine-bot` command line: help for everything, --version, and `generate` refusing early."""

from __future__ import annotations

import argparse
import time
from importlib.metadata import version
from pathlib import Path

import pytest

from bot.entrypoints import cli
from bot.entrypoints.cli import main


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    [action] = [a for a in cli._parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def test_every_subcommand_has_a_description_and_every_option_help() -> None:
    """Each subcommand says what it does (a summary in the list, a description in its own --help) and
    each of its arguments says what it takes."""
    parser = cli._parser()
    [action] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    summaries = {choice.dest: choice.help for choice in action._choices_actions}
    commands = _subcommands()
    assert set(commands) >= {"run", "worker", "migrate", "generate", "doctor", "prune", "backup", "restore"}
    for name, command in commands.items():
        assert summaries.get(name), f"{name} has no summary in `imagine-bot --help`"
        assert command.description, f"{name} has no description"
        for argument in command._actions:
            if isinstance(argument, argparse._HelpAction):
                continue
            assert argument.help, f"{name} {'/'.join(argument.option_strings) or argument.dest} has no help"
    for argument in parser._actions:
        assert argument.help, f"imagine-bot {argument.option_strings} has no help"


def test_help_shows_the_description(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["generate", "--help"])
    assert stopped.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "The prompt is checked before the model loads." in out
    assert "--seed SEED seed of the first image" in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    """`--version` prints the installed package's version and exits 0."""
    with pytest.raises(SystemExit) as stopped:
        main(["--version"])
    assert stopped.value.code == 0
    assert capsys.readouterr().out == f"imagine-bot {version('imagine-bot')}\n"


@pytest.fixture
def no_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`generate` set up with a model that must never load: building a backend fails the test."""
    monkeypatch.chdir(tmp_path)  # no .env here
    monkeypatch.setenv("DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path}/bot.db")
    monkeypatch.setenv("IMAGE_DIR", str(tmp_path / "images"))
    monkeypatch.setenv("MODEL", str(tmp_path / "no-model-here"))
    monkeypatch.delenv("FAST_MODEL", raising=False)

    def never(*args: object) -> None:
        raise AssertionError("the model was loaded before the request was checked")

    monkeypatch.setattr("bot.runtime.app.make_backend", never)
    return tmp_path


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["a fox --bogus"], "I don't know the flag `--bogus`."),
        (["a fox --steps 99"], "Steps must be between 1 and 60; got 99."),
        (["a fox", "--steps", "0"], "Steps must be between 1 and 60; got 0."),
        (["a fox --ar 9:1"], "between 1:3 and 3:1"),
        (["a fox --guidance 50"], "Guidance must be between 0 and 20; got 50."),
        (["a fox --seed 7", "--seed", "8"], "You gave the seed twice"),
        (["a fox --fast"], "fast"),
        (["   "], "The prompt is empty"),
    ],
)
def test_generate_refuses_a_bad_request_before_loading_the_model(
    no_model: Path, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The whole request is checked against the settings' limits first: one line, exit code 2, in well
    under the seconds a model takes, and no database is made."""
    started = time.perf_counter()
    assert main(["generate", *argv]) == 2
    assert time.perf_counter() - started < 5
    output = capsys.readouterr()
    lines = output.err.strip().splitlines()
    assert len(lines) == 1, lines
    assert message in lines[0]
    assert not (no_model / "bot.db").exists()


def test_generate_refuses_an_out_that_is_a_file(no_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--out` naming a file (or a path through one) is refused before anything runs: one line, exit 2."""
    (no_model / "grid.png").write_bytes(b"an old picture")
    assert main(["generate", "a fox", "--out", "grid.png"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "--out grid.png is a file: give a folder for the images."
    ]
    assert main(["generate", "a fox", "--out", "grid.png/new"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "--out grid.png/new: grid.png is a file: give a folder for the images."
    ]
    assert (no_model / "grid.png").read_bytes() == b"an old picture"
    assert not (no_model / "bot.db").exists()


def test_generate_writes_the_grid_on_the_tiny_model(
    tmp_path: Path, tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A request that passes the early check runs as before: the grid and its four images."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path}/bot.db")
    monkeypatch.setenv("IMAGE_DIR", str(tmp_path / "images"))
    monkeypatch.setenv("MODEL", str(tiny_model_path))
    monkeypatch.setenv("DEVICE", "cpu")
    monkeypatch.setenv("DTYPE", "float32")
    monkeypatch.setenv("SAFETY_MODEL", "off")
    assert main(["generate", "a fox --ar 3:2 --seed 7", "--steps", "2", "--out", "out"]) == 0
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == [
        "1-1.png",
        "1-2.png",
        "1-3.png",
        "1-4.png",
        "1-grid.png",
    ]
    assert "Wrote out/1-grid.png" in capsys.readouterr().err
