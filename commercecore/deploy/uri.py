"""Perl's `URI->canonical`, which the plan's `%uri` pragma goes through before entering the ids."""

from __future__ import annotations

import re

# schemes Perl's URI treats as servers (URI::_server subclasses), with their default ports
_DEFAULT_PORTS = {
    "http": 80,
    "https": 443,
    "ftp": 21,
    "ssh": 22,
    "sftp": 22,
    "telnet": 23,
    "gopher": 70,
    "pop": 110,
    "nntp": 119,
    "ldap": 389,
    "rlogin": 513,
    "ldaps": 636,
    "rsync": 873,
}
_PCT_RE = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.!~*'()")


def _fix_escape(match: re.Match[str]) -> str:
    char = chr(int(match.group(1), 16))
    return char if char in _UNRESERVED else f"%{match.group(1).upper()}"


def canonical_uri(uri: str) -> str:
    """Perl's `URI->canonical`, which the `%uri` pragma goes through before it enters the ids:
    lower-case scheme, needless percent-escapes decoded, the rest upper-cased; for server schemes
    also a lower-case host, no default port and `/` for an empty http path; a lower-case urn NID."""
    scheme, colon, rest = uri.partition(":")
    if not colon or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme):
        return _PCT_RE.sub(_fix_escape, uri)
    scheme = scheme.lower()
    if scheme in _DEFAULT_PORTS and rest.startswith("//"):
        authority, sep, tail = rest[2:].partition("/")
        for stop in "?#":
            if stop in authority:
                authority, found, more = authority.partition(stop)
                tail, sep = "", ""
                rest_tail = found + more + (sep + tail)
                break
        else:
            rest_tail = sep + tail
        userinfo, at, hostport = authority.rpartition("@")
        host, port = hostport, ""
        match = re.fullmatch(r"(.*):(\d*)", hostport)
        if match:
            host, port = match.group(1), match.group(2)
        if port and int(port) == _DEFAULT_PORTS[scheme]:
            port = ""
        authority = f"{userinfo}{at}{host.lower()}" + (f":{port}" if port else "")
        if scheme in ("http", "https") and not rest_tail.startswith(("/", "?")):
            rest_tail = "/" + rest_tail
        rest = f"//{authority}{rest_tail}"
    elif scheme == "urn":
        nid, sep, nss = rest.partition(":")
        rest = f"{nid.lower()}{sep}{nss}"
    return _PCT_RE.sub(_fix_escape, f"{scheme}:{rest}")
