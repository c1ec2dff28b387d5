#!/usr/bin/env bash
# Large rooms and bulk sync (issue 16), every figure of bench/README.md's
# "Large rooms" section, each on a fresh server (--spawn, 2 shards):
#
#   1. PUT of a 100,000-member room: time, server RSS growth
#   2. a 1,000,000-member room built by 10 batches of 100,000 put_member
#   3. 1,000,000 contact pairs imported by 10 batches
#   4. 10,000 of the 100,000 members online: login storm (dumps), 200
#      presence changes of one member to 9,999 watchers (CPU per change),
#      20 members removed and re-added meanwhile
#   5. the same changes 10 at a time (one frame per watcher per round)
#   6. OP_RTMSG at saturation: one room of 10,000 joined connections vs 100
#      rooms of 10 (back to back)
#   7. restart with 10,000,000 relations (bench/restart.sh)
#
#   bench/bigroom.sh [OUT_DIR]     # default bench/results/bigroom-<date>
#
# Reports (txt, json) go to OUT_DIR; a summary is printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-bench/results/bigroom-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
cargo build --release --workspace -q
LG=target/release/loadgen
SRV=(--spawn target/release/chatd --server-shards 2 --quiet)

bigroom() {
    local name=$1
    shift
    "$LG" bigroom "${SRV[@]}" --report-dir "$OUT/$name" "$@" | tee "$OUT/$name.txt"
}
fanout() {
    local name=$1
    shift
    "$LG" fanout "${SRV[@]}" --max --duration 10 --warmup 2 --threads 2 \
        --report-dir "$OUT/$name" "$@" | tee "$OUT/$name.txt"
}

bigroom put-100k --members 100000 --online 0
bigroom batches-1m --members 2 --online 0 --batch-members 1000000 --batch-size 100000
bigroom contacts-1m --members 2 --online 0 --contact-pairs 1000000 --batch-size 100000
bigroom online-10k --members 100000 --online 10000 --changes 200 --membership-ops 20
bigroom online-10k-pipelined --members 100000 --online 10000 --changes 200 --pipeline 10
fanout fanout-100x10 --rooms 100 --members 10
fanout fanout-1x10000 --rooms 1 --members 10000 --sender-share 0.001
bench/restart.sh 5000000 5000000 2 | tee "$OUT/restart-10m.txt"

echo "=== summary ($OUT) ==="
grep -H -E '^(put|batch_room|contacts)_(secs|rss_growth_mb|index_bytes_per_relation|rss_bytes_per_relation)|^(login|change|membership)_|^latency|^measured' "$OUT"/*.txt || true
grep -H -E 'restart with|filled' "$OUT/restart-10m.txt" || true
