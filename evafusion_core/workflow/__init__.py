"""Run ComfyUI workflows headless, without the browser (stdlib + ``requests``; never imports ComfyUI).

The pieces, usable on their own:

* :func:`comfyui_path` finds the ComfyUI folder (``COMFYUI_PATH`` or the one that
  ``scripts/provision_comfyui.py`` put under ``.cache/comfyui/ComfyUI``).
* :class:`ComfyServer` starts ``python main.py`` from that folder on 127.0.0.1 and a free port, waits until
  it answers, and stops it by PID.
* :func:`convert_to_api` turns the browser's saved workflow (``nodes`` + ``links``) into the API format
  that the server runs, the way the frontend's "Queue" button does it (widget order from ``/object_info``,
  Reroute / PrimitiveNode / muted / bypassed / Note nodes). :func:`is_api_format` tells them apart.
* :func:`apply_overrides` sets ``NODE_ID.INPUT=VALUE`` values on an API prompt.
* :func:`run_prompt` queues an API prompt, follows its progress (websocket, falling back to polling) and
  returns its outputs; :func:`output_files` lists the files those outputs saved.
* :func:`run_workflow` does all of it for a workflow file.

Every failure raises :class:`WorkflowError` with a message meant for the user.
"""

from .common import Progress, WorkflowError
from .convert import apply_overrides, convert_to_api, is_api_format, load_workflow
from .run import output_files, run_prompt, run_workflow
from .server import ComfyServer, comfyui_path, folder_args, isolated_folders

__all__ = [
    "ComfyServer",
    "Progress",
    "WorkflowError",
    "apply_overrides",
    "comfyui_path",
    "convert_to_api",
    "folder_args",
    "is_api_format",
    "isolated_folders",
    "load_workflow",
    "output_files",
    "run_prompt",
    "run_workflow",
]
