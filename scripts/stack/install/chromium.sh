#!/usr/bin/env bash
# Chromium with CDP, and the display stack N.eko streams (Xvfb, openbox, PulseAudio, dbus).
# Debian packages Chromium; Ubuntu 22.04 only ships it as a snap (no snapd in a container), so the
# image uses Playwright's build there, linked to /usr/local/bin/chromium-pw as the seed plans.
# `--headless-only` (the native test's dashboard screenshot) installs just Chromium on Debian.
set -euo pipefail
. "$(dirname "$0")/../lib.sh"
if [ "$(os_id)" = debian ]; then
  apt_install chromium fonts-dejavu-core
  ln -sf "$(command -v chromium)" /usr/local/bin/chromium-pw
else
  venv_install "$CONCLAVE_PREFIX/playwright-venv" playwright "playwright==$PLAYWRIGHT_VERSION"
  "$CONCLAVE_PREFIX/playwright-venv/bin/playwright" install --with-deps chromium
  ln -sf "$(find /root/.cache/ms-playwright -path '*chrome-linux/chrome' | sort | tail -n 1)" /usr/local/bin/chromium-pw
fi
[ "${1:-}" = --headless-only ] || apt_install xvfb openbox pulseaudio dbus
log "chromium: $(/usr/local/bin/chromium-pw --version 2>/dev/null || echo installed)"
