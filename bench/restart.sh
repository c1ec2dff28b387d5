#!/usr/bin/env bash
# Start-up with many relations (issue 16): fills a fresh data dir with
# MEMBERS room memberships and PAIRS contact pairs through POST /v1/batch
# (loadgen bigroom, no clients), stops the server, then starts it again
# and times how long it takes until it listens (all relations loaded and
# installed on the shards), with its RSS once it listens.
#
#   bench/restart.sh [MEMBERS] [PAIRS] [SHARDS]     # defaults 5000000 5000000 2
#
# Builds the release binaries first. The data dir is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
MEMBERS=${1:-5000000}
PAIRS=${2:-5000000}
SHARDS=${3:-2}
cargo build --release --workspace -q
BIN=target/release/chatd
DIR=$(mktemp -d /tmp/chatd-restart.XXXXXX)
trap 'kill "$PID" 2>/dev/null || true; rm -rf "$DIR"' EXIT

# Starts the server on $DIR; sets PID, ADMIN and MS (the milliseconds
# from exec to its last listening line).
start() {
    local t0 line
    t0=$(date +%s%N)
    coproc SRV { exec "$BIN" --data-dir "$DIR/data" --shards "$SHARDS" \
        --chatd-listen 127.0.0.1:0 --statusd-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
        2>"$DIR/chatd.log"; }
    PID=$SRV_PID
    while IFS= read -r line <&"${SRV[0]}"; do
        case "$line" in
            "admin listening on "*) ADMIN=${line#admin listening on }; break ;;
        esac
    done
    MS=$((($(date +%s%N) - t0) / 1000000))
}

rss_mb() { awk '/^VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$1/status"; }

stop() {
    kill -TERM "$PID"
    wait "$PID" 2>/dev/null || true
}

start
echo "empty start: ${MS} ms, RSS $(rss_mb "$PID") MB"
target/release/loadgen bigroom --admin "$ADMIN" --admin-token "$(cat "$DIR/data/admin.token")" \
    --server-pid "$PID" --members 2 --online 0 --changes 0 \
    --batch-members "$MEMBERS" --contact-pairs "$PAIRS" --batch-size 100000 \
    --report-dir "$DIR/reports" --quiet
echo "filled: RSS $(rss_mb "$PID") MB, database $(du -m "$DIR/data/relations.redb" | cut -f1) MB"
stop
start
echo "restart with $((MEMBERS + 2)) memberships and $PAIRS contact pairs: ${MS} ms to listen, RSS $(rss_mb "$PID") MB"
grep -o 'relations loaded.*' "$DIR/chatd.log" | sed 's/\x1b\[[0-9;]*m//g' || true
stop
