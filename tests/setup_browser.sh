#!/usr/bin/env bash
# Install what tests/test_browser.py needs: Debian's `chromium`, driven by Playwright's Python driver.
#
# Idempotent: does nothing when /usr/bin/chromium exists. Installs with apt-get only where apt-get is available and
# we are root (or have passwordless sudo); otherwise prints why and exits 0, and the browser test skips with that
# reason. Never runs `playwright install` (its browser downloads are not available everywhere; the system Chromium
# is used through `executable_path`).
set -euo pipefail

CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
if [ -x "$CHROMIUM" ]; then
    echo "setup_browser: $CHROMIUM present ($("$CHROMIUM" --version 2>/dev/null || echo 'version unknown'))"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup_browser: $CHROMIUM missing and apt-get not available; browser tests will be skipped" >&2
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "setup_browser: $CHROMIUM missing and not root (no passwordless sudo); browser tests will be skipped" >&2
        exit 0
    fi
fi
echo "setup_browser: installing Debian chromium with apt-get"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core
"$CHROMIUM" --version
