"""``key.sub=JSON`` overrides of a nested config, as every training command's ``--set`` takes them."""

from __future__ import annotations

import json
from typing import Any


def apply_overrides(data: dict[str, Any], items: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=JSON`` overrides in place (a bare word that is not JSON is taken as a string);
    missing sections are created. Returns ``data``."""
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} is not KEY=VALUE")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        *parents, leaf = key.split(".")
        node = data
        for k in parents:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {k} is not a section")
        node[leaf] = value
    return data
