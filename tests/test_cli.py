"""The command line's help: a version, help for every argument, exit codes and an example per
command, and no abbreviated options."""

from __future__ import annotations

import argparse

import pytest

from fmbench.cli import build_parser, main


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("fmbench 0.")


@pytest.mark.parametrize("name", sorted(_subcommands()))
def test_every_argument_has_help_and_every_command_an_example(name):
    p = _subcommands()[name]
    for action in p._actions:
        if not isinstance(action, argparse._HelpAction):
            assert action.help, (name, action.dest)
    assert "example: fmbench " + name in p.epilog and "exit codes: 0" in p.epilog


def test_abbreviations_are_refused(tiny_suite_file, capsys):
    with pytest.raises(SystemExit) as e:
        main(["run", str(tiny_suite_file), "--resum"])
    assert e.value.code == 2 and "unrecognized arguments: --resum" in capsys.readouterr().err
