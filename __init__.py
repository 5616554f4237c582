"""ComfyUI entry point for the EVAFusion node pack.

ComfyUI imports this file when the repository sits in ``custom_nodes/``. It must be
cheap and must never take ComfyUI down: on any import error it logs the cause and
exports no nodes. Heavy libraries are imported inside the nodes, not here.
"""

import logging

log = logging.getLogger("evafusion")

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}

try:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: F811
except Exception:  # noqa: BLE001 - any failure must leave ComfyUI running
    log.exception("EVAFusion: the node pack failed to import; no EVAFusion nodes are available")

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
