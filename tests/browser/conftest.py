"""Fixtures for the real-browser tests: a ComfyUI server, headless Chromium driven through Playwright.

Everything here is skipped, with the reason and the command that fixes it, when Chromium, Node.js,
playwright-core (``scripts/browser/node_modules``), ComfyUI or its frontend package is missing. Set
``EVAF_BROWSER_REQUIRED=1`` (``make test-browser`` and ``make screenshots`` do) to fail instead of skip.

Environment:
    EVAF_SCREENSHOT_DIR   where the screenshots go (default ``out/browser``; ``make screenshots`` uses
                          ``docs/screenshots``): ``<workflow>_graph.png`` and ``<workflow>_output.png``.
    EVAF_BROWSER_RUN_TIMEOUT  seconds a queued workflow may run (default 600).
    CHROMIUM              the Chromium binary (default ``/usr/bin/chromium``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_driver import INSTALL_HINT, REPO, TIMINGS, BrowserDriver, missing_requirements, record_timing

from evafusion_core.workflow import ComfyServer, WorkflowError, comfyui_path, folder_args, isolated_folders

SHOTS_DIR = Path(os.environ.get("EVAF_SCREENSHOT_DIR") or REPO / "out" / "browser").resolve()
REQUIRED = os.environ.get("EVAF_BROWSER_REQUIRED", "") not in ("", "0", "false", "no")

#: Settings of the fresh test user, written before the page opens. Without "TutorialCompleted" a new
#: user gets the template browser on top of the canvas at start-up (and its loading races with our
#: drop); the minimap and the canvas statistics would cover or clutter the screenshots.
USER_SETTINGS = {
    "Comfy.TutorialCompleted": True,
    "Comfy.Minimap.Visible": False,
    "Comfy.Graph.CanvasInfo": False,
}

def _missing() -> list[str]:
    missing = missing_requirements()
    try:
        comfyui_path()
    except WorkflowError as exc:
        missing.append(str(exc))
    try:
        import comfyui_frontend_package  # noqa: F401
    except ImportError:
        missing.append("comfyui-frontend-package is not installed in this Python (run `make comfyui`)")
    return missing


@pytest.fixture(scope="session", autouse=True)
def browser_requirements() -> None:
    """Skip (or, with EVAF_BROWSER_REQUIRED=1, fail) every browser test when something is missing."""
    missing = _missing()
    if missing:
        msg = "browser tests need: " + "; ".join(missing) + f" -- {INSTALL_HINT}"
        if REQUIRED:
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)


@pytest.fixture(scope="session")
def shots_dir() -> Path:
    SHOTS_DIR.mkdir(parents=True, exist_ok=True)
    return SHOTS_DIR


@pytest.fixture(scope="session")
def browser_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Fresh input/output/temp/user folders: the demo inputs in input/, the test user's settings."""
    from PIL import Image

    from evafusion_core.demo import write_comfy_inputs

    dirs = isolated_folders(tmp_path_factory.mktemp("comfy_browser"))
    write_comfy_inputs(dirs["input"])
    # tests/comfy/fixtures/reroute_primitive.json loads this one.
    Image.new("RGB", (64, 48), (40, 120, 200)).save(dirs["input"] / "evaf_input.png")
    settings = dirs["user"] / "default" / "comfy.settings.json"
    settings.parent.mkdir(parents=True)
    settings.write_text(json.dumps(USER_SETTINGS, indent=2))
    return dirs


@pytest.fixture(scope="session")
def browser_server(browser_dirs: dict[str, Path]) -> Iterator[ComfyServer]:
    """A real ComfyUI server (CPU, ``--cache-none``) serving the installed frontend package."""
    server = ComfyServer(
        ["--cache-none", *folder_args(browser_dirs)],
        log_path=browser_dirs["output"].parent / "server.log",
    )
    t0 = time.monotonic()
    with server:
        record_timing("ComfyUI server start", time.monotonic() - t0)
        print(f"\nComfyUI server {server.url} up in {time.monotonic() - t0:.1f} s (log {server.log_path})")
        yield server


@pytest.fixture(scope="session")
def browser_object_info(browser_server: ComfyServer) -> dict[str, Any]:
    return browser_server.object_info()


@pytest.fixture(scope="session")
def browser(browser_dirs: dict[str, Path]) -> Iterator[BrowserDriver]:
    """The Node.js driver with headless Chromium launched (one browser; each test opens its own page)."""
    driver = BrowserDriver(browser_dirs["output"].parent / "browser_driver.log")
    with driver:
        t0 = time.monotonic()
        info = driver.call("launch", timeout=60)
        record_timing("Chromium launch", time.monotonic() - t0)
        print(f"\nChromium {info.get('version')} (driver log {driver.log_path})")
        yield driver


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not TIMINGS:
        return
    terminalreporter.section("browser tests")
    terminalreporter.write_line(f"screenshots: {SHOTS_DIR}")
    for name, seconds in TIMINGS:
        terminalreporter.write_line(f"  {seconds:7.1f} s  {name}")
