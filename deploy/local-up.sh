#!/usr/bin/env bash
# Runs Nodeway on this machine from a fresh checkout (README "Run"): installs nats-server (Debian package, when
# root), npm packages, builds, then `nodeway up` — nats-server, a gateway on 127.0.0.1:8000, one agent, and the
# example workflows. Extra arguments go to `nodeway up` (e.g. --tls). Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nats-server >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nats-server >/dev/null 2>&1 \
      || { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nats-server >/dev/null; }
  else
    echo "nats-server is missing: install the Debian package nats-server (sudo apt-get install nats-server)" >&2
    exit 1
  fi
fi
if [ -f package-lock.json ]; then npm ci --no-audit --no-fund >/dev/null; else npm install --no-audit --no-fund >/dev/null; fi
npm run build >/dev/null
exec node --no-memory-reducer --max-semi-space-size=4 bin/nodeway.js up "$@"
