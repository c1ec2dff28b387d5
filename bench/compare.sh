#!/usr/bin/env bash
# Peer comparison: the same fanout workload against chatd, Redis pub/sub and
# NATS on loopback, with the same loadgen I/O loop and verification for all.
#
#   bench/compare.sh                        # everything, about 4 minutes
#   RATES="10000 20000" DURATION=3 bench/compare.sh
#
# Installs redis-server and nats-server from the distribution's packages
# when missing (apt-get; needs root), starts each on loopback on a free port,
# builds chatd and loadgen in release, and for every target runs
#   (a) a paced sweep: RATES messages/s, DURATION s each (p50/p99 from the
#       intended send time, deliveries/s, CPU of the server and of loadgen);
#   (b) a saturation run (--max --window WINDOW), deliveries/s.
# Targets: chatd --shards 1, redis, nats and (CHATD2=1, the default) chatd
# --shards 2. Prints a side-by-side table and writes it, with the raw JSON
# reports, to bench/results/compare-<date>.md and bench/results/compare-<date>/.
#
# Settings (environment): ROOMS (100) MEMBERS (10 subscribers per room)
# PUBLISHERS (1 per room, a separate connection) SIZE (128 payload bytes)
# RATES ("10000 20000 40000 80000") DURATION (5) WARMUP (1) SAT_DURATION (5)
# WINDOW (16) THREADS (1 loadgen thread) CHATD2 (1) P99_MS (5: the latency
# bound of the "highest paced rate" rows, which also show 2x and 4x it).
set -euo pipefail
cd "$(dirname "$0")/.."

ROOMS=${ROOMS:-100}
MEMBERS=${MEMBERS:-10}
PUBLISHERS=${PUBLISHERS:-1}
SIZE=${SIZE:-128}
RATES=${RATES:-"10000 20000 40000 80000"}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
SAT_DURATION=${SAT_DURATION:-5}
WINDOW=${WINDOW:-16}
THREADS=${THREADS:-1}
CHATD2=${CHATD2:-1}
P99_MS=${P99_MS:-5}

stamp=$(date +%Y%m%d-%H%M%S)
results=bench/results
raw=$results/compare-$stamp
table=$results/compare-$stamp.md
mkdir -p "$raw"
t_begin=$(date +%s)

log() { echo "compare: $*" >&2; }

# --- servers -------------------------------------------------------------
find_bin() { command -v "$1" 2>/dev/null || { [ -x "/usr/sbin/$1" ] && echo "/usr/sbin/$1"; } || true; }
missing=()
[ -n "$(find_bin redis-server)" ] || missing+=(redis-server)
[ -n "$(find_bin nats-server)" ] || missing+=(nats-server)
command -v jq >/dev/null || missing+=(jq)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        log "missing ${missing[*]}: run as root (apt-get) or install them"; exit 1
    fi
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
REDIS=$(find_bin redis-server)
NATS=$(find_bin nats-server)

free_port() {
    local p
    for _ in $(seq 1 50); do
        # Below the ephemeral range (32768-60999 by default): a port in
        # use as the local end of some connection cannot be listened on,
        # and a connect test does not see that.
        p=$((10000 + RANDOM % 20000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
    done
    log "no free port found"; exit 1
}
wait_port() {
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    log "nothing listens on port $1"; exit 1
}

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

redis_port=$(free_port)
"$REDIS" --save '' --appendonly no --protected-mode no --bind 127.0.0.1 --port "$redis_port" \
    --client-output-buffer-limit 'pubsub 0 0 0' --maxclients 20000 --loglevel warning \
    >"$raw/redis.log" 2>&1 &
redis_pid=$!; pids+=("$redis_pid")
nats_port=$(free_port)
# max_pending: bytes a slow subscriber may have queued before the server
# cuts it (default 64 MB); raised so that a saturation run never drops one.
cat >"$raw/nats.conf" <<EOF
max_pending: 268435456
write_deadline: "10s"
EOF
"$NATS" -c "$raw/nats.conf" -a 127.0.0.1 -p "$nats_port" >"$raw/nats.log" 2>&1 &
nats_pid=$!; pids+=("$nats_pid")
wait_port "$redis_port"
wait_port "$nats_port"
log "redis-server $("$REDIS" --version | awk '{print $3}') pid $redis_pid port $redis_port;" \
    "nats-server $("$NATS" --version | awk '{print $2}') pid $nats_pid port $nats_port"

# --- build ---------------------------------------------------------------
log "building chatd and loadgen (release)"
cargo build --release -q -p chatd --bin chatd
cargo build --release -q -p loadgen
LG=target/release/loadgen

# --- runs ----------------------------------------------------------------
targets=(chatd1 redis nats)
[ "$CHATD2" = 1 ] && targets=(chatd1 chatd2 redis nats)
declare -A args=(
    [chatd1]="--spawn target/release/chatd --server-shards 1"
    [chatd2]="--spawn target/release/chatd --server-shards 2"
    [redis]="--target redis --redis 127.0.0.1:$redis_port --server-pid $redis_pid"
    [nats]="--target nats --nats 127.0.0.1:$nats_port --server-pid $nats_pid"
)
common="--rooms $ROOMS --members $MEMBERS --publishers $PUBLISHERS --size $SIZE \
--threads $THREADS --warmup $WARMUP --quiet"

# run TARGET NAME EXTRA...: one loadgen run; its report lands in $raw/TARGET-NAME.json
run() {
    local tgt=$1 name=$2; shift 2
    local dir="$raw/$tgt-$name.d"
    local rc=0
    # shellcheck disable=SC2086
    $LG fanout ${args[$tgt]} $common --report-dir "$dir" "$@" >"$raw/$tgt-$name.txt" 2>&1 || rc=$?
    local json
    json=$(ls "$dir"/*.json 2>/dev/null | head -1 || true)
    if [ -n "$json" ]; then
        jq --argjson rc "$rc" '. + {exit_code: $rc}' "$json" >"$raw/$tgt-$name.json"
    else
        echo "{\"exit_code\": $rc}" >"$raw/$tgt-$name.json"
    fi
    rm -rf "$dir"
    log "$tgt $name: exit $rc, $(jq -r '"\(.deliveries_per_sec // 0 | floor) deliveries/s, p99 \(.latency_ms.p99 // "-") ms"' "$raw/$tgt-$name.json")"
}

for tgt in "${targets[@]}"; do
    for r in $RATES; do
        run "$tgt" "rate-$r" --rate "$r" --duration "$DURATION"
    done
    run "$tgt" max --max --window "$WINDOW" --duration "$SAT_DURATION"
done

# --- table ---------------------------------------------------------------
# j TARGET RUN JQ-EXPR: a value of a report, "-" where missing.
j() { jq -r "if .exit_code == 1 then \"-\" else ($3) // \"-\" end" "$raw/$1-$2.json"; }
ok() { [ "$(jq -r '.exit_code' "$raw/$1-$2.json")" = 0 ] || printf ' FAIL'; }
fmt_k() { awk -v v="$1" 'BEGIN { if (v == "-") print "-"; else printf "%.0fk", v / 1000 }'; }
fmt_2() { awk -v v="$1" 'BEGIN { if (v == "-") print "-"; else printf "%.2f", v }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b + 0 == 0) print "-"; else printf "%.2f", a / b }'; }
# best TARGET MS: the highest rate of the sweep up to which every rate
# verified, sent >= 95% of its target and had p99 < MS (0: not even the first)
best() {
    local b=0 r s p
    for r in $RATES; do
        p=$(j "$1" "rate-$r" '.latency_ms.p99')
        s=$(j "$1" "rate-$r" '.sent_per_sec')
        [ "$(jq -r '.exit_code' "$raw/$1-rate-$r.json")" = 0 ] || break
        awk -v p="$p" -v s="$s" -v r="$r" -v m="$2" 'BEGIN { exit !(p != "-" && p < m && s >= 0.95 * r) }' || break
        b=$r
    done
    echo "$b"
}

declare -A label=([chatd1]="chatd 1 shard" [chatd2]="chatd 2 shards" [redis]="redis" [nats]="nats")
{
    echo "# chatd vs Redis vs NATS: fanout, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), load average before the runs: $(cut -d' ' -f1-3 /proc/loadavg). Client and servers on the same box, loopback."
    echo "Servers: chatd $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- src 2>/dev/null || echo '+dirty'), redis-server $("$REDIS" --version | awk '{print $3}' | sed 's/v=//'), nats-server $("$NATS" --version | awk '{print $2}')."
    echo "Workload: $ROOMS rooms x $MEMBERS subscribers, $PUBLISHERS publisher(s) per room (own connection; in chatd a room member), $SIZE-byte payloads, $THREADS loadgen thread(s); paced runs ${DURATION} s after ${WARMUP} s warm-up, saturation --max --window $WINDOW for ${SAT_DURATION} s. Latency from the intended send time. CPU in cores over the measured window (utime+stime from /proc; nats-server and chatd --shards 2 are multi-threaded, redis-server runs pub/sub on one thread)."
    echo "Command: \`bench/compare.sh\` (ROOMS=$ROOMS MEMBERS=$MEMBERS PUBLISHERS=$PUBLISHERS SIZE=$SIZE RATES=\"$RATES\" DURATION=$DURATION WINDOW=$WINDOW THREADS=$THREADS)"
    echo
    printf '| |'; for t in "${targets[@]}"; do printf ' %s |' "${label[$t]}"; done; echo ' chatd/redis | chatd/nats |'
    printf '|---|'; for _ in "${targets[@]}"; do printf -- '---|'; done; echo '---|---|'
    # saturation rows
    row() {  # row TITLE RUN EXPR FORMAT(k|2) RATIO(yes|no)
        local vals=() t v
        printf '| %s |' "$1"
        for t in "${targets[@]}"; do
            v=$(j "$t" "$2" "$3"); vals+=("$v")
            if [ "$4" = k ]; then printf ' %s%s |' "$(fmt_k "$v")" "$(ok "$t" "$2")"; else printf ' %s%s |' "$(fmt_2 "$v")" "$(ok "$t" "$2")"; fi
        done
        local c r n
        c=$(j chatd1 "$2" "$3"); r=$(j redis "$2" "$3"); n=$(j nats "$2" "$3")
        if [ "$5" = yes ]; then echo " $(ratio "$c" "$r") | $(ratio "$c" "$n") |"; else echo ' | |'; fi
    }
    row "saturation: deliveries/s" max '.deliveries_per_sec' k yes
    row "saturation: messages/s" max '.sent_per_sec' k yes
    row "saturation: p50 ms" max '.latency_ms.p50' 2 no
    row "saturation: p99 ms" max '.latency_ms.p99' 2 yes
    row "saturation: server cpu (cores)" max '.server.cores_used' 2 yes
    row "saturation: loadgen cpu (cores)" max '.loadgen.cores_used' 2 no
    row "saturation: deliveries/s per server core" max 'if (.server.cores_used // 0) > 0 then .deliveries_per_sec / .server.cores_used else null end' k yes
    for r in $RATES; do
        row "paced $r msg/s: p50 ms" "rate-$r" '.latency_ms.p50' 2 yes
        row "paced $r msg/s: p99 ms" "rate-$r" '.latency_ms.p99' 2 yes
        row "paced $r msg/s: deliveries/s" "rate-$r" '.deliveries_per_sec' k no
        row "paced $r msg/s: server cpu" "rate-$r" '.server.cores_used' 2 yes
        row "paced $r msg/s: loadgen cpu" "rate-$r" '.loadgen.cores_used' 2 no
    done
    for ms in $P99_MS $((P99_MS * 2)) $((P99_MS * 4)); do
        printf '| highest paced rate with p99 < %s ms (msg/s) |' "$ms"
        for t in "${targets[@]}"; do printf ' %s |' "$(best "$t" "$ms")"; done
        echo " $(ratio "$(best chatd1 "$ms")" "$(best redis "$ms")") | $(ratio "$(best chatd1 "$ms")" "$(best nats "$ms")") |"
    done
    echo
    echo "Ratios compare chatd with 1 shard. Above 1 is better for chatd in throughput rows, worse in latency and CPU rows. FAIL: the run did not verify (see its .txt). Raw reports: $raw/."
    echo "Took $(( $(date +%s) - t_begin )) s."
} | tee "$table"
log "table written to $table"
