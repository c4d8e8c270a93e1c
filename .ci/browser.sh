#!/usr/bin/env bash
# Installs Debian's chromium when no chromium is on PATH: the console's
# browser tests (cmd/afterok/console_browser_test.go) drive it headless
# over the DevTools protocol. No test downloads a browser of its own; with
# no chromium they skip, and under CI=true they fail. Idempotent.
set -euo pipefail
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi; }
for b in chromium chromium-browser; do
  if command -v "$b" >/dev/null; then echo "browser: $(command -v "$b")"; exit 0; fi
done
if command -v apt-get >/dev/null; then
  echo "browser: installing Debian's chromium for the console's browser tests"
  if as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; then
    exit 0
  fi
fi
echo "browser: no chromium and none could be installed; the console's browser tests will skip (and fail under CI=true)" >&2
