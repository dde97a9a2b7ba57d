#!/usr/bin/env bash
# Debian's headless Chromium for the page's tests (tests/test_ui.py). Playwright for Python drives
# it (executable_path=/usr/bin/chromium); a browser that a tool downloads by itself is not used.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
  echo "Chromium is missing: run 'sudo apt-get install -y chromium chromium-driver' (the page's tests need it)" >&2
  exit 1
fi
echo "installing Debian's chromium and chromium-driver (once)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq chromium chromium-driver >/dev/null
