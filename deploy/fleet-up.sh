#!/usr/bin/env bash
# A whole fleet on this machine, each role its own process, as on many hosts: 3 nats-servers in a cluster on
# loopback (routes authorized, mutual TLS; TLS to clients), 2 gateways behind the TLS proxy, 3 agents. Ports
# are ephemeral: the script prints where everything listens. Ctrl-C stops all of it. The cluster tests
# (test/reliability/cluster.test.ts) start the same fleet (test/helpers/fleet.ts).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v nats-server >/dev/null || { echo "nats-server is missing (apt-get install nats-server)" >&2; exit 1; }
[ -d node_modules ] || npm ci --no-audit --no-fund >/dev/null
npm run build >/dev/null
exec node --import ./test/register.mjs test/helpers/fleet.ts
