#!/usr/bin/env bash
# Install what the browser tests (tests/browser/) need; safe to run again (a second run only checks).
#
#   1. Debian's Chromium at /usr/bin/chromium (apt-get; skipped when it is already there).
#      Playwright's own browser download does not work on these machines, so the tests drive this one.
#   2. playwright-core, pinned in scripts/browser/package.json + package-lock.json, into
#      scripts/browser/node_modules (npm ci; skipped when the pinned version is already installed).
#   3. A check that the ComfyUI frontend package is installed in the project's venv (make comfyui).
#
# Environment: CHROMIUM (default /usr/bin/chromium), PYTHON (default .venv/bin/python).
# Exits non-zero with a message saying what to do when something cannot be installed.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"

say() { printf '[browser-install] %s\n' "$*"; }
die() { printf '[browser-install] ERROR: %s\n' "$*" >&2; exit 1; }

# ------------------------------------------------------------------------------------------- Chromium
if [ -x "$CHROMIUM" ]; then
    say "chromium: $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM") (already installed)"
else
    command -v apt-get >/dev/null 2>&1 \
        || die "$CHROMIUM not found and apt-get is not available: install Chromium and set CHROMIUM=/path/to/chromium"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || die "$CHROMIUM not found; installing it needs root (apt-get install chromium)"
        SUDO="sudo -n"
    fi
    export DEBIAN_FRONTEND=noninteractive
    # `apt-get update` only when there are no package lists yet, or when the first install attempt fails.
    if ! ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1; then
        say "apt-get update"
        $SUDO apt-get update -q || die "apt-get update failed"
    fi
    say "apt-get install chromium"
    if ! $SUDO apt-get install -y -q --no-install-recommends chromium fonts-liberation; then
        say "install failed; refreshing the package lists and trying again"
        $SUDO apt-get update -q || die "apt-get update failed"
        $SUDO apt-get install -y -q --no-install-recommends chromium fonts-liberation \
            || die "apt-get install chromium failed"
    fi
    [ -x "$CHROMIUM" ] || die "chromium was installed but $CHROMIUM does not exist; set CHROMIUM to its path"
    say "chromium: $("$CHROMIUM" --version 2>/dev/null)"
fi

# ------------------------------------------------------------------------------------- playwright-core
command -v node >/dev/null 2>&1 || die "node not found: install Node.js >= 20 (apt-get install nodejs npm)"
command -v npm >/dev/null 2>&1 || die "npm not found: install npm (apt-get install npm)"
want="$(node -p "require('$HERE/package.json').dependencies['playwright-core']")"
have="$(node -p "try { require('$HERE/node_modules/playwright-core/package.json').version } catch (e) { '' }")"
if [ "$have" = "$want" ]; then
    say "playwright-core $have (already installed)"
else
    say "npm ci (playwright-core $want)"
    ( cd "$HERE" && npm ci --no-audit --no-fund --loglevel=error ) \
        || die "npm ci failed in $HERE (is the npm registry reachable?)"
    have="$(node -p "require('$HERE/node_modules/playwright-core/package.json').version")"
    [ "$have" = "$want" ] || die "npm installed playwright-core $have, expected $want"
    say "playwright-core $have"
fi

# ------------------------------------------------------------------------------------ ComfyUI frontend
[ -x "$PYTHON" ] || die "$PYTHON not found: run \`make\` / \`make comfyui\` first (or set PYTHON)"
fe="$("$PYTHON" - <<'PY' 2>/dev/null || true
from importlib import metadata
from pathlib import Path
import comfyui_frontend_package as fp
root = Path(fp.__file__).parent / "static"
assert (root / "index.html").is_file(), root
print(metadata.version("comfyui-frontend-package"))
PY
)"
[ -n "$fe" ] || die "comfyui-frontend-package is not installed in $PYTHON: run \`make comfyui\`"
say "comfyui-frontend-package $fe"
say "ok"
