"""Fixtures for the tests against a real ComfyUI server (CPU).

The whole folder is skipped, with the command to fix it, when ComfyUI has not been provisioned
(``make comfyui``) and ``COMFYUI_PATH`` does not point at one.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from evafusion_core.workflow import ComfyServer, WorkflowError, comfyui_path, folder_args, isolated_folders

INPUT_IMAGE = "evaf_input.png"
INPUT_SIZE = (64, 48)  # width, height


def _comfy_dir_or_reason() -> tuple[Path | None, str]:
    try:
        return comfyui_path(), ""
    except WorkflowError as exc:
        return None, str(exc)


@pytest.fixture(scope="session", autouse=True)
def comfy_dir() -> Path:
    """The ComfyUI folder; skips every test in this folder when there is none."""
    path, reason = _comfy_dir_or_reason()
    if path is None:
        pytest.skip(f"ComfyUI tests skipped: {reason}")
    return path


@pytest.fixture(scope="session")
def comfy_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Fresh input/output/temp/user folders for the test server, with a test image in input/."""
    from PIL import Image

    dirs = isolated_folders(tmp_path_factory.mktemp("comfy"))
    w, h = INPUT_SIZE
    img = Image.new("RGB", (w, h))
    img.putdata([((x * 4) % 256, (y * 5) % 256, 128) for y in range(h) for x in range(w)])
    img.save(dirs["input"] / INPUT_IMAGE)
    return dirs


@pytest.fixture(scope="session")
def comfy_server(comfy_dir: Path, comfy_dirs: dict[str, Path]) -> Iterator[ComfyServer]:
    """A real ComfyUI server for the whole session (``--cache-none``, temporary folders)."""
    server = ComfyServer(
        ["--cache-none", *folder_args(comfy_dirs)],
        comfy_dir=comfy_dir,
        log_path=comfy_dirs["output"].parent / "server.log",
    )
    t0 = time.monotonic()
    with server:
        print(f"\nComfyUI server {server.url} up in {time.monotonic() - t0:.1f} s (log {server.log_path})")
        yield server


@pytest.fixture(scope="session")
def object_info(comfy_server: ComfyServer) -> dict[str, Any]:
    """The real server's /object_info."""
    return comfy_server.object_info()


@pytest.fixture(scope="session")
def demo_inputs(comfy_dirs: dict[str, Path]) -> Path:
    """The files the example workflows read, written into the test server's input folder."""
    from evafusion_core.demo import write_comfy_inputs

    write_comfy_inputs(comfy_dirs["input"])
    return comfy_dirs["input"]
