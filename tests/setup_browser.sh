#!/usr/bin/env bash
# Install what tests/test_browser.py needs: Debian's `chromium`, driven by Playwright's Python driver.
#
# Idempotent: does nothing when /usr/bin/chromium exists. Installs with apt-get only where apt-get is available and
# we are root (or have passwordless sudo); otherwise prints why and exits 0, and the browser test skips with that
# reason. Never runs `playwright install` (its browser downloads are not available everywhere; the system Chromium
# is used through `executable_path`).
set -euo pipefail
source "$(dirname "$0")/apt_install.sh"

CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
if [ -x "$CHROMIUM" ]; then
    echo "setup_browser: $CHROMIUM present ($("$CHROMIUM" --version 2>/dev/null || echo 'version unknown'))"
    exit 0
fi
apt_install "setup_browser: $CHROMIUM missing" chromium fonts-dejavu-core || exit 0
"$CHROMIUM" --version
