#!/usr/bin/env bash
# One command: build release, run the loadgen suite (short fanout, calls and
# presence runs) against a freshly spawned server, print every report.
# Extra arguments go to `loadgen suite` (e.g. --duration 10 --threads 2).
# Reports land in ./bench-reports (<scenario>.txt/.hgrm/.json). The summary
# says per scenario whether its figure is the server's (loadgen's send lag,
# its busiest thread, other processes on the box) and what good looks like.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace
exec target/release/loadgen suite --spawn target/release/chatd --duration 5 "$@"
