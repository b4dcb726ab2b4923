"""Pattern filters an index can serve: the literal prefix of a LIKE pattern or an anchored regex, and the
byte ranges that hold every value starting with it.

The `api` views are security barriers: PostgreSQL evaluates a filter inside one (where the indexes are)
only when its operator is leakproof. LIKE, ILIKE and the regex operators are not, so `name ilike 'ab%'` runs
over every row the view yields. The pattern comparison operators (`~>=~`, `~<~`, byte order, as the
`text_pattern_ops` indexes keep it) are leakproof: a read adds `name ~>=~ 'ab' and name ~<~ 'ac'` beside the
pattern, PostgreSQL pushes that range into the view and onto the index, and the pattern itself only checks
the few rows in the range. UTF-8 orders bytes as code points, so the range of a prefix is the prefix up to
its successor (the last code point plus one).

A case-insensitive pattern gets one range per spelling of its first few characters (`ab` -> `ab`, `aB`, `Ab`,
`AB`), every character that lower-cases to the same one included (Unicode case mapping), so the ranges hold
every value the pattern can match.
"""

from __future__ import annotations

import itertools

# characters whose lower case is reached from no upper or title case of it: KELVIN SIGN lowers to k,
# ANGSTROM SIGN to å, CAPITAL SHARP S to ß, CAPITAL I WITH DOT ABOVE to i (and a combining dot), GREEK
# CAPITAL THETA SYMBOL to θ, OHM SIGN to ω
_ALSO_LOWERS_TO = {
    "k": "\u212a",
    "å": "\u212b",
    "ß": "\u1e9e",
    "i": "\u0130",
    "θ": "\u03f4",
    "ω": "\u2126",
}
_REGEX_SPECIAL = frozenset(".[](){}*+?|\\^$")
_QUANTIFIERS = frozenset("*+?{")
# case-insensitive ranges: spellings of at most this many leading characters, and at most this many ranges
CASE_CHARACTERS = 3
MAX_RANGES = 16
_LAST_CODE_POINT = 0x10FFFF


def like_prefix(pattern: str) -> str:
    """The literal characters a LIKE pattern starts with (`%` and `_` are wildcards, `\\` escapes)."""
    prefix: list[str] = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            if index + 1 == len(pattern):
                break
            prefix.append(pattern[index + 1])
            index += 2
            continue
        if char in "%_":
            break
        prefix.append(char)
        index += 1
    return "".join(prefix)


def _top_level_alternative(pattern: str) -> bool:
    """Whether `|` splits the whole regex (`^ab|cd` matches cd anywhere)."""
    depth = 0
    in_brackets = False
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            index += 2
            continue
        if in_brackets:
            in_brackets = char != "]"
        elif char == "[":
            in_brackets = True
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "|" and depth == 0:
            return True
        index += 1
    return False


def regex_prefix(pattern: str) -> str:
    """The literal characters every match of a POSIX regex starts with: it must begin with `^`, and a
    character that a quantifier follows is not part of it (`^ab*` -> `a`)."""
    if not pattern.startswith("^") or _top_level_alternative(pattern):
        return ""
    prefix: list[str] = []
    for char in pattern[1:]:
        if char in _QUANTIFIERS:
            if prefix:
                prefix.pop()
            break
        if char in _REGEX_SPECIAL:
            break
        prefix.append(char)
    return "".join(prefix)


def successor(prefix: str) -> str | None:
    """The smallest string greater than every string starting with `prefix` (None: there is none)."""
    chars = list(prefix)
    while chars:
        code = ord(chars[-1]) + 1
        if code == 0xD800:
            code = 0xE000  # surrogates are not characters of UTF-8 text
        if code <= _LAST_CODE_POINT:
            chars[-1] = chr(code)
            return "".join(chars)
        chars.pop()
    return None


def _spellings(char: str) -> list[str] | None:
    """Every character that lower-cases as `char` does (None when its lower case is several characters)."""
    lower = char.lower()
    if len(lower) != 1:
        return None
    found = {lower}
    for other in (lower.upper(), lower.title()):
        if len(other) == 1 and other.lower() == lower:
            found.add(other)
    if lower in _ALSO_LOWERS_TO:
        found.add(_ALSO_LOWERS_TO[lower])
    return sorted(found)


def case_prefixes(prefix: str) -> list[str]:
    """The spellings of the first characters of `prefix` whose ranges together hold every value that
    starts with `prefix` ignoring case (an empty list: no range can be given)."""
    choices: list[list[str]] = []
    count = 1
    for char in prefix[:CASE_CHARACTERS]:
        spellings = _spellings(char)
        if spellings is None or count * len(spellings) > MAX_RANGES:
            break
        choices.append(spellings)
        count *= len(spellings)
    if not choices:
        return []
    return ["".join(combination) for combination in itertools.product(*choices)]


def ranges(prefix: str, *, ignore_case: bool) -> list[tuple[str, str | None]]:
    """[(lower bound, upper bound or None)] whose union holds every value starting with `prefix`."""
    starts = case_prefixes(prefix) if ignore_case else ([prefix] if prefix else [])
    return [(start, successor(start)) for start in starts]
