"""Every option of every ``embedclf`` command says what it does in ``--help`` (no services needed)."""

from __future__ import annotations

from collections.abc import Iterator

import click
from click.testing import CliRunner

from embedclf.cli import cli


def commands(cmd: click.Command, path: tuple[str, ...] = ("embedclf",)) -> Iterator[tuple[tuple[str, ...],
                                                                                          click.Command]]:
    yield path, cmd
    if isinstance(cmd, click.Group):
        for name in sorted(cmd.commands):
            yield from commands(cmd.commands[name], (*path, name))


def test_the_walk_reaches_nested_commands():
    paths = {" ".join(p) for p, _ in commands(cli)}
    assert {"embedclf heads train", "embedclf heads report", "embedclf bench queue", "embedclf db roles"} <= paths
    assert len(paths) > 30


def test_every_option_has_help_text():
    missing = [f"{' '.join(path)} {'/'.join(p.opts)}" for path, cmd in commands(cli) for p in cmd.params
               if isinstance(p, click.Option) and not p.hidden and not (p.help or "").strip()]
    assert missing == []


def test_every_command_has_a_description():
    assert [" ".join(path) for path, cmd in commands(cli) if not (cmd.help or cmd.short_help or "").strip()] == []


def test_help_texts_show_up_in_help_output():
    def help_of(*args: str) -> str:
        return " ".join(CliRunner().invoke(cli, [*args, "--help"]).output.split())  # unwrapped

    out = help_of("heads", "train")
    assert "--seed INTEGER Random seed of the data splits" in out
    assert "--activate / --no-activate Make the new version the active one" in out
    assert "--json Print one JSON list of versions (dates in ISO 8601)" in help_of("heads", "list")

