"""EVAFusion ComfyUI nodes: thin adapters over evafusion_core, one module per domain.

V3 node classes are listed in NODE_CLASS_MAPPINGS directly (the hybrid registration
of COMFYUI.md 4.2) so tools that read only the mappings still see the pack. An
optional group whose dependencies are missing is skipped with a warning.
"""

from __future__ import annotations

import importlib
import logging

log = logging.getLogger("evafusion")

_GROUPS = ("fusion", "metrics")

NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}

for _group in _GROUPS:
    try:
        _module = importlib.import_module(f".{_group}", __name__)
    except ImportError as exc:
        log.warning("EVAFusion: skipping the %s nodes (%s)", _group, exc)
        continue
    for _cls in _module.NODES:
        _schema = _cls.define_schema()
        NODE_CLASS_MAPPINGS[_schema.node_id] = _cls
        NODE_DISPLAY_NAME_MAPPINGS[_schema.node_id] = _schema.display_name
