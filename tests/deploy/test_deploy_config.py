"""sqitch.conf reading (git-config syntax, three files) and where the committer's name comes from."""

from __future__ import annotations

import getpass
import shutil
import subprocess
from pathlib import Path

import pytest

from commercecore.deploy.config import ConfigError, SqitchConfig, identity, parse_config
from commercecore.deploy.dburl import display_url, libpq_url
from commercecore.deploy.errors import DeployError


def test_git_config_syntax() -> None:
    values = parse_config(
        "# comment\n[core]\n\tengine = pg ; trailing comment\n\ttop_dir = .\n"
        '[engine "pg"]\n\tclient = "/opt/pg 18/bin/psql"  # quoted blanks\n'
        '\tTarget = db:pg://h/x\\\n_more\n[deploy]\n\tverify\n[Core.Sub]\n\tkey = "a\\tb\\\\c\\""\n',
        Path("sqitch.conf"),
    )
    assert values == {
        "core.engine": "pg",
        "core.top_dir": ".",
        "engine.pg.client": "/opt/pg 18/bin/psql",
        "engine.pg.target": "db:pg://h/x_more",
        "deploy.verify": "true",
        "core.sub.key": 'a\tb\\c"',
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("key = 1\n", "sqitch.conf:1: bad config line"),
        ("[core\n", "sqitch.conf:1: bad section header"),
        ('[core]\n\tx = "open\n', "sqitch.conf:2: unterminated quoted value"),
    ],
)
def test_bad_config_names_file_and_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(text, Path("sqitch.conf"))


def test_project_file_wins_over_user_and_system(tmp_path: Path) -> None:
    (tmp_path / "system.conf").write_text(
        "[core]\n\tengine = pg\n\tregistry = sys\n[user]\n\tname = System\n"
    )
    (tmp_path / "user.conf").write_text("[core]\n\tregistry = usr\n[user]\n\tname = User\n\temail = u@x\n")
    (tmp_path / "sqitch.conf").write_text('[engine "pg"]\n\tregistry = proj\n[deploy]\n\tverify = off\n')
    env = {
        "SQITCH_SYSTEM_CONFIG": str(tmp_path / "system.conf"),
        "SQITCH_USER_CONFIG": str(tmp_path / "user.conf"),
    }
    config = SqitchConfig.load(tmp_path, env)
    assert config.engine_value("registry") == "proj"
    assert config.get("core.registry") == "usr"
    assert config.get_bool("deploy.verify") is False
    assert identity(config, tmp_path, env).name == "User"
    assert identity(config, tmp_path, {**env, "SQITCH_FULLNAME": "Env"}).name == "Env"
    with pytest.raises(ConfigError, match="not a boolean"):
        SqitchConfig({"deploy.verify": "maybe"}).get_bool("deploy.verify")


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_identity_falls_back_on_git_then_the_os_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.delenv("GIT_CONFIG_GLOBAL", raising=False)
    env = {"SQITCH_SYSTEM_CONFIG": "/nonexistent", "SQITCH_USER_CONFIG": "/nonexistent"}
    empty = SqitchConfig({})
    plain = tmp_path / "plain"
    plain.mkdir()
    who = identity(empty, plain, env)
    user = getpass.getuser()
    assert who.email.startswith(f"{user}@")
    assert who.name  # the account's full name, else its login

    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "config", "user.name", "Git Name"], check=True)
    subprocess.run(["git", "-C", str(repo), "config", "user.email", "git@example.com"], check=True)
    assert identity(empty, repo, env).name == "Git Name"
    assert identity(empty, repo, env).email == "git@example.com"
    assert identity(SqitchConfig({"user.name": "Conf"}), repo, env).name == "Conf"


def test_target_urls() -> None:
    assert libpq_url("db:pg://u:p@h:5432/db?sslmode=require") == "postgresql://u:p@h:5432/db?sslmode=require"
    assert libpq_url("db:pg:shop") == "postgresql:///shop"
    assert libpq_url("postgresql://h/db") == "postgresql://h/db"
    with pytest.raises(DeployError, match="only db:pg: targets"):
        libpq_url("db:mysql://h/db")
    assert display_url("postgresql://u:secret@h/db") == "postgresql://u@h/db"
    assert display_url("db:pg://u:secret@h/db") == "db:pg://u@h/db"
