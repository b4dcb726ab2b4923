"""sqitch's lexical rules (Plan.pm), translated from Perl regular expressions.

`[[:blank:]]` is horizontal white space; `$punct` is [:punct:] without `_` and, because of how Perl
reads the `[\\]` inside it, without the backslash.
"""

from __future__ import annotations

import re

BLANKS = " \t\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000"
BLANK = f"[{BLANKS}]"
PUNCT = re.escape("-!\"#$%&'()*+,./:;<=>?@[]^`{|}~")

# Plan.pm $name_re: no leading or trailing punctuation, no blanks : @ # \, and no `^3`-style suffixes
NAME_PATTERN = (
    rf"(?![{PUNCT}])"
    rf"(?:(?![~/=%^]\d+(?:$|{BLANK}))[^{BLANKS}:@#\\])+"
    rf"(?<![{PUNCT}])\b"
)
# ChangeList.pm `_offset`: `^`, `^^`, `^3` (back) or `~`, `~~`, `~3` (forward) ending a reference
OFFSET_RE = re.compile(rf"(?<![{PUNCT}])([~^])(?:(\1)|(\d+))?\Z")
