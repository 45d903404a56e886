#!/usr/bin/env bash
# Chromium for the web page's end-to-end tests (tests/e2e): Debian's package, driven by Playwright
# through its executable path (Playwright's own browser download is never used; it cannot work offline).
# Installs with apt-get when run as root; otherwise says how. KBQA_CHROMIUM names another binary.
set -euo pipefail
browser=${KBQA_CHROMIUM:-/usr/bin/chromium}
if [ -x "$browser" ]; then
  echo "==> browser: $("$browser" --version 2>/dev/null || echo "$browser")"
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "==> installing Debian's chromium for the browser tests (apt-get)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  echo "==> browser: $(/usr/bin/chromium --version 2>/dev/null)"
else
  echo "!!  Chromium is missing, so the browser tests will be skipped (and fail under CI)."
  echo "!!  Install it with: sudo apt-get install chromium   (or set KBQA_CHROMIUM to a Chromium binary)"
fi
