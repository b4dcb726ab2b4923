"""Stripe's request encoding: application/x-www-form-urlencoded with bracketed keys, as the SDK sends it
(`line_items[0][price_data][currency]=eur`, `metadata[order_id]=7`, `expand[]=x`) -> nested dicts/lists."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_PART = re.compile(r"\[([^\[\]]*)\]")


class FormError(ValueError):
    """A key the encoding does not allow (the message names it)."""


def decode(body: str) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for key, value in parse_qsl(body, keep_blank_values=True, strict_parsing=False):
        match = _KEY.match(key)
        if not match:
            raise FormError(f"Invalid parameter name: {key}")
        parts = [match.group(1), *_PART.findall(match.group(2))]
        node: dict[str, Any] = root
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            if part == "":
                # `name[]=x`: append; the container is marked with an auto-increment key
                part = str(sum(1 for k in node if k.isdigit()))
            if last:
                node[part] = value
            else:
                child = node.setdefault(part, {})
                if not isinstance(child, dict):
                    raise FormError(f"Invalid parameter name: {key} (conflicts with a value)")
                node = child
    decoded: dict[str, Any] = _listify(root)
    return decoded


def _listify(node: Any) -> Any:
    """Dicts whose keys are all indices 0..n-1 become lists (line_items[0], line_items[1], ...)."""
    if not isinstance(node, dict):
        return node
    converted = {k: _listify(v) for k, v in node.items()}
    if converted and all(k.isdigit() for k in converted):
        indices = sorted(int(k) for k in converted)
        if indices == list(range(len(indices))):
            return [converted[str(i)] for i in indices]
    return converted
