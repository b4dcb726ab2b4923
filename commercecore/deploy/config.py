"""Sqitch configuration: the git-config style files sqitch reads, and the committer identity.

Sqitch merges three files, later ones winning: system (`$SQITCH_SYSTEM_CONFIG` or
/etc/sqitch/sqitch.conf), user (`$SQITCH_USER_CONFIG` or ~/.sqitch/sqitch.conf) and the project's
(`$SQITCH_CONFIG` or sqitch.conf in the directory sqitch runs from, here the project directory).
"""

from __future__ import annotations

import getpass
import os
import pwd
import re
import socket
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from commercecore.deploy.errors import DeployError, display_path

_SECTION_RE = re.compile(r'\[\s*([^\]"\s]+)(?:\s+"((?:[^"\\]|\\.)*)")?\s*\]')
_KEY_RE = re.compile(r"([A-Za-z][A-Za-z0-9_-]*)\s*(=?)")
_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0", ""})
_ESCAPES = {"\\": "\\", '"': '"', "n": "\n", "t": "\t", "b": "\b"}


class ConfigError(DeployError):
    """A configuration file is malformed; names the file and line."""


def _canonical_key(section: str, subsection: str | None, name: str) -> str:
    # git-config keys: section and name are case-insensitive, the subsection is not
    if subsection is None:
        return f"{section.lower()}.{name.lower()}"
    return f"{section.lower()}.{subsection}.{name.lower()}"


def _parse_value(raw: str, lines: list[str], start: int, file: Path) -> tuple[str, int]:
    """The value after `=`: quotes keep blanks, `#`/`;` start a comment, `\\` continues the line."""
    out: list[str] = []
    pending_space = ""
    quoted = False
    index = start
    text = raw
    pos = 0
    while True:
        if pos >= len(text):
            if quoted:
                raise ConfigError(f"{display_path(file)}:{index + 1}: unterminated quoted value")
            break
        char = text[pos]
        if char == "\\":
            if pos + 1 >= len(text):
                # a trailing backslash joins the next physical line
                index += 1
                if index >= len(lines):
                    break
                text, pos = lines[index], 0
                continue
            escaped = _ESCAPES.get(text[pos + 1])
            if escaped is None:
                raise ConfigError(f"{display_path(file)}:{index + 1}: bad escape \\{text[pos + 1]}")
            out.append(pending_space + escaped)
            pending_space = ""
            pos += 2
            continue
        if char == '"':
            quoted = not quoted
            pos += 1
            continue
        if not quoted and char in "#;":
            break
        if not quoted and char.isspace():
            if out:
                pending_space += char
            pos += 1
            continue
        out.append(pending_space + char)
        pending_space = ""
        pos += 1
    return "".join(out), index


def parse_config(text: str, file: Path) -> dict[str, str]:
    """Parse one git-config style file into `section[.subsection].name -> value` (last value wins)."""
    values: dict[str, str] = {}
    section: str | None = None
    subsection: str | None = None
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index].strip()
        if not line or line[0] in "#;":
            index += 1
            continue
        if line.startswith("["):
            match = _SECTION_RE.match(line)
            rest = line[match.end() :].strip() if match else ""
            if match is None or (rest and rest[0] not in "#;"):
                raise ConfigError(f"{display_path(file)}:{index + 1}: bad section header")
            section, subsection = match.group(1), match.group(2)
            if subsection is None and "." in section:
                # deprecated `[section.subsection]` form: the subsection is lower-cased by git
                section, subsection = section.split(".", 1)
                subsection = subsection.lower()
            elif subsection is not None:
                subsection = re.sub(r"\\(.)", r"\1", subsection)
            index += 1
            continue
        key = _KEY_RE.match(line)
        if key is None or section is None:
            raise ConfigError(f"{display_path(file)}:{index + 1}: bad config line")
        name = key.group(1)
        if key.group(2):
            value, index = _parse_value(line[key.end() :], lines, index, file)
        else:
            rest = line[key.end() :].strip()
            if rest and rest[0] not in "#;":
                raise ConfigError(f"{display_path(file)}:{index + 1}: bad config line")
            value = "true"  # a bare key is a boolean true in git-config
        values[_canonical_key(section, subsection, name)] = value
        index += 1
    return values


def _config_files(project_dir: Path, env: Mapping[str, str]) -> list[Path]:
    system = Path(env.get("SQITCH_SYSTEM_CONFIG") or "/etc/sqitch/sqitch.conf")
    user = Path(env.get("SQITCH_USER_CONFIG") or Path.home() / ".sqitch" / "sqitch.conf")
    local = Path(env["SQITCH_CONFIG"]) if env.get("SQITCH_CONFIG") else project_dir / "sqitch.conf"
    return [system, user, local]


@dataclass(frozen=True)
class SqitchConfig:
    """The merged configuration; keys are `section.name` or `section.subsection.name`."""

    values: Mapping[str, str]

    @classmethod
    def load(cls, project_dir: Path, env: Mapping[str, str] | None = None) -> SqitchConfig:
        environ = os.environ if env is None else env
        merged: dict[str, str] = {}
        for file in _config_files(project_dir, environ):
            if file.is_file():
                merged.update(parse_config(file.read_text(encoding="utf-8"), file))
        return cls(merged)

    def get(self, key: str) -> str | None:
        section, _, rest = key.partition(".")
        subsection, _, name = rest.rpartition(".")
        return self.values.get(_canonical_key(section, subsection or None, name))

    def get_bool(self, key: str) -> bool | None:
        value = self.get(key)
        if value is None:
            return None
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ConfigError(f"{key}: {value!r} is not a boolean")

    def engine_value(self, name: str, engine: str = "pg") -> str | None:
        """Sqitch's lookup for target settings: `engine.<engine>.<name>`, then `core.<name>`."""
        # empty values fall through, as in sqitch's `||` chain
        return self.get(f"engine.{engine}.{name}") or self.get(f"core.{name}") or None


@dataclass(frozen=True)
class Identity:
    """Who runs the deployment: written to the registry as committer (and installer, creator)."""

    name: str
    email: str


def _git_config(key: str, cwd: Path) -> str | None:
    try:
        proc = subprocess.run(
            ["git", "config", "--get", key], cwd=cwd, capture_output=True, text=True, check=False, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    value = proc.stdout.strip()
    return value if proc.returncode == 0 and value else None


def _system_user(env: Mapping[str, str]) -> str:
    if env.get("SQITCH_ORIG_SYSUSER"):
        return env["SQITCH_ORIG_SYSUSER"]
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return env.get("LOGNAME") or env.get("USER") or env.get("USERNAME") or "unknown"


def _gecos_name(user: str) -> str | None:
    try:
        gecos = pwd.getpwnam(user).pw_gecos
    except KeyError:
        return None
    return gecos.split(",")[0] or None


def identity(config: SqitchConfig, project_dir: Path, env: Mapping[str, str] | None = None) -> Identity:
    """The committer as sqitch finds it (env, sqitch config), then git config, then the OS user."""
    environ = os.environ if env is None else env
    name = (
        environ.get("SQITCH_FULLNAME")
        or config.get("user.name")
        or environ.get("SQITCH_ORIG_FULLNAME")
        or _git_config("user.name", project_dir)
    )
    email = (
        environ.get("SQITCH_EMAIL")
        or config.get("user.email")
        or environ.get("SQITCH_ORIG_EMAIL")
        or _git_config("user.email", project_dir)
    )
    if not name or not email:
        user = _system_user(environ)
        name = name or _gecos_name(user) or user
        email = email or f"{user}@{socket.gethostname()}"
    return Identity(name=name, email=email)
