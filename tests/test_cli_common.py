"""What every command shares: the one-line formatter, the failure line, the database URL option under both
spellings, and the duration forms."""

from __future__ import annotations

import datetime

import click
import pytest
from click.testing import CliRunner

from commercecore.cli import main
from commercecore.cli.common import DurationType, fail, parse_duration
from commercecore.text import one_line

MINUTE = datetime.timedelta(minutes=1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("15m", 15 * MINUTE),
        ("90s", datetime.timedelta(seconds=90)),
        ("2h", 120 * MINUTE),
        ("1h30m", 90 * MINUTE),
        ("900", datetime.timedelta(seconds=900)),
        ("30min", 30 * MINUTE),
        ("1 hour", 60 * MINUTE),
        ("2d", datetime.timedelta(days=2)),
        ("15min", 15 * MINUTE),
        ("2 hours 30 minutes", 150 * MINUTE),
        (" 1 Day ", datetime.timedelta(days=1)),
        ("1w", datetime.timedelta(days=7)),
        ("1.5h", 90 * MINUTE),
        ("01:30:00", 90 * MINUTE),
        ("1 day 02:00", datetime.timedelta(days=1, hours=2)),
        ("-5 minutes", -5 * MINUTE),
        ("5 minutes ago", -5 * MINUTE),
        ("0s", datetime.timedelta(0)),
    ],
)
def test_duration_forms(text: str, expected: datetime.timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["soon", "", "m15", "15 parsecs", "1h 30", "1:2:3:4", "ago", "1h,30m"])
def test_not_a_duration(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


def test_duration_option_refuses_negative_and_garbage() -> None:
    @click.command()
    @click.option("--after", type=DurationType(), default="15m")
    def show(after: datetime.timedelta) -> None:
        click.echo(after.total_seconds())

    runner = CliRunner()
    assert runner.invoke(show, []).output == "900.0\n"
    assert runner.invoke(show, ["--after", "1h30m"]).output == "5400.0\n"
    negative = runner.invoke(show, ["--after", "-5m"])
    assert negative.exit_code == 2
    assert "negative" in negative.output
    garbage = runner.invoke(show, ["--after", "later"])
    assert garbage.exit_code == 2
    assert "not a duration" in garbage.output


def test_one_line() -> None:
    assert one_line('relation  "x"\n  does not exist\n') == 'relation "x" does not exist'
    assert one_line(ValueError("a\r\nb")) == "a b"
    assert one_line(ValueError()) == "ValueError"
    assert one_line("") == ""


def test_fail_prints_one_escaped_line_and_exits_with_the_code() -> None:
    @click.command()
    def broken() -> None:
        fail("bad [bold]input[/]\n  on line 2", code=3)

    result = CliRunner().invoke(broken, [])
    assert result.exit_code == 3
    assert result.stdout == ""
    assert result.stderr == "error: bad [bold]input[/] on line 2\n"


def _commands(group: click.Group, prefix: str = "") -> dict[str, click.Command]:
    found: dict[str, click.Command] = {}
    for name, command in group.commands.items():
        found[prefix + name] = command
        if isinstance(command, click.Group):
            found.update(_commands(command, f"{prefix}{name} "))
    return found


def test_every_command_with_a_database_takes_both_spellings() -> None:
    with_url = {
        name: next(param for param in command.params if param.name == "database_url")
        for name, command in _commands(main).items()
        if any(param.name == "database_url" for param in command.params)
    }
    # the deployer, the DBA tools, the jobs runner and payments all name their database
    assert {"db deploy", "db status", "db backup", "dba health", "jobs run", "payments reconcile"} <= set(
        with_url
    )
    for name, option in with_url.items():
        assert option.opts == ["--database-url", "--db-url"], name
    # and no command names it any other way
    for name, command in _commands(main).items():
        for param in command.params:
            if param.name != "database_url":
                assert not {"--db-url", "--database-url"} & set(param.opts), name
