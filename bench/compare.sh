#!/usr/bin/env bash
# chatd beside its peers and its floor, one command: bench/compare.sh
#
# One fan-out workload (ROOMS rooms x MEMBERS receivers, PUBLISHERS
# publishers per room on connections of their own, SIZE-byte payloads)
# against five servers on this host, loopback:
#   floor   bench/floor.c: a single-threaded epoll server speaking chatd's
#           fan-out subset with no checks (the performance floor)
#   chatd1  chatd --shards 1      chatd2  chatd --shards 2 (CHATD2=1)
#   redis   redis-server pub/sub  nats    nats-server core pub/sub
#   chatd1ws  chatd1's own server, clients over WebSocket (WS=1)
#   chatd1tls a chatd --shards 1 with a certificate, clients over TLS (TLS=1)
#   natsws    the same nats-server, clients on its WebSocket listener (WS=1)
# and, for each:
#   (a) saturation: `loadgen fanout --max --window W` for every W of WINDOWS;
#       the target's best window (highest deliveries/s) is its figure, with
#       deliveries per server CPU-second (utime+stime from /proc over the
#       measured window) and whether loadgen itself was the limit;
#   (b) the independent check: bench/fanclient.c (C, one epoll loop, none of
#       loadgen's code) at the same window; loadgen must agree within 15%;
#   (c) paced runs at RATE_PCTS percent of chatd1's saturation rate:
#       latency from the intended send time, loadgen's send lag (actual -
#       intended) and whether the run is trustworthy; plus fanclient at the
#       first of those rates.
# Prints a side-by-side table (and the WebSocket and TLS ratios: chatd over
# WebSocket and TLS against chatd over TCP in the same run, and against
# NATS over its own WebSocket listener) and writes it, with every raw JSON
# report and log, to bench/results/compare-<date>.md and
# bench/results/compare-<date>/. fanclient speaks TCP only: the WebSocket
# and TLS columns have no independent check.
#
# Settings (environment): ROOMS (100) MEMBERS (10) PUBLISHERS (1) SIZE (128)
# WINDOWS ("16 64 256 1024") SAT_DURATION (5) RATE_PCTS ("10 25 50")
# DURATION (5) WARMUP (1) THREADS (1 loadgen thread) CHATD2 (1) WS (1) TLS (1)
# CHATD_ARGS ("--no-pin": the clients share the cores, where tuning.md
# measured pinned shards 23% slower).
# BASE_BIN: a second chatd binary (say, main's build) run as one more
# target, "chatd base" (1 shard), so that before and after are compared
# in one run on the same box; BASE_REV labels it (default: "base").
# QUICK=1: a smoke check in about two minutes (windows 64 256, 2 s runs,
# paced at 25% only, no chatd2). Takes about 8 minutes by default.
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
    WINDOWS=${WINDOWS:-"64 256"}; SAT_DURATION=${SAT_DURATION:-2}; DURATION=${DURATION:-2}
    RATE_PCTS=${RATE_PCTS:-"25"}; CHATD2=${CHATD2:-0}; WARMUP=${WARMUP:-0.5}
fi
ROOMS=${ROOMS:-100}
MEMBERS=${MEMBERS:-10}
PUBLISHERS=${PUBLISHERS:-1}
SIZE=${SIZE:-128}
WINDOWS=${WINDOWS:-"16 64 256 1024"}
SAT_DURATION=${SAT_DURATION:-5}
RATE_PCTS=${RATE_PCTS:-"10 25 50"}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
THREADS=${THREADS:-1}
CHATD2=${CHATD2:-1}
WS=${WS:-1}
TLS=${TLS:-1}
CHATD_ARGS=${CHATD_ARGS:---no-pin}
BASE_BIN=${BASE_BIN:-}
BASE_REV=${BASE_REV:-base}
# Agreement required between loadgen and fanclient (issue 12: 15%).
AGREE_PCT=15

stamp=$(date +%Y%m%d-%H%M%S)
results=bench/results
raw=$results/compare-$stamp
table=$results/compare-$stamp.md
mkdir -p "$raw"
t_begin=$(date +%s)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

log() { echo "compare: $*" >&2; }

# --- tools and servers ---------------------------------------------------
find_bin() { command -v "$1" 2>/dev/null || { [ -x "/usr/sbin/$1" ] && echo "/usr/sbin/$1"; } || true; }
missing=()
[ -n "$(find_bin redis-server)" ] || missing+=(redis-server)
[ -n "$(find_bin nats-server)" ] || missing+=(nats-server)
command -v jq >/dev/null || missing+=(jq)
command -v curl >/dev/null || missing+=(curl)
command -v gcc >/dev/null || missing+=(gcc)
command -v openssl >/dev/null || missing+=(openssl)
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

log "building chatd and loadgen (release), floor and fanclient (gcc -O2)"
cargo build --release -q -p chatd --bin chatd
cargo build --release -q -p loadgen
LG=target/release/loadgen
mkdir -p target/bench
gcc -O2 -Wall -o target/bench/floor bench/floor.c
gcc -O2 -Wall -o target/bench/fanclient bench/fanclient.c
FC=target/bench/fanclient

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
# listening_port LOG NAME: the port of the "NAME listening on ADDR" line.
listening_port() {
    for _ in $(seq 1 200); do
        local l
        l=$(grep -m1 "^$2 listening on " "$1" 2>/dev/null || true)
        [ -n "$l" ] && { echo "${l##*:}"; return 0; }
        sleep 0.05
    done
    log "$2 did not start (see $1)"; exit 1
}

pids=()
dirs=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    for d in "${dirs[@]}"; do rm -rf "$d"; done
}
trap cleanup EXIT

redis_port=$(free_port)
"$REDIS" --save '' --appendonly no --protected-mode no --bind 127.0.0.1 --port "$redis_port" \
    --client-output-buffer-limit 'pubsub 0 0 0' --maxclients 20000 --loglevel warning \
    >"$raw/redis.log" 2>&1 &
redis_pid=$!; pids+=("$redis_pid")
nats_port=$(free_port)
# max_pending: bytes a slow subscriber may have queued before the server
# cuts it (default 64 MB); raised so that a saturation run never drops one.
nats_ws_port=$(free_port)
cat >"$raw/nats.conf" <<EOF
max_pending: 268435456
write_deadline: "10s"
websocket {
  port: $nats_ws_port
  no_tls: true
}
EOF
"$NATS" -c "$raw/nats.conf" -a 127.0.0.1 -p "$nats_port" >"$raw/nats.log" 2>&1 &
nats_pid=$!; pids+=("$nats_pid")
target/bench/floor >"$raw/floor.log" 2>&1 &
floor_pid=$!; pids+=("$floor_pid")
floor_port=$(listening_port "$raw/floor.log" floor)
wait_port "$redis_port"
wait_port "$nats_port"
wait_port "$nats_ws_port"
# The TLS chatd's certificate (self-signed, for 127.0.0.1; not a CA, which
# rustls's verifier would refuse as a server's certificate).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=127.0.0.1 \
    -addext subjectAltName=IP:127.0.0.1 -addext basicConstraints=critical,CA:FALSE \
    -keyout "$raw/tls-key.pem" -out "$raw/tls-cert.pem" 2>/dev/null

# start_chatd NAME SHARDS [ARGS...]: a chatd on free ports with a temp data
# dir; chatd0 is BASE_BIN, which may predate the WebSocket listener (none
# is asked of it).
declare -A chatd_port admin_port admin_token chatd_pid ws_port
start_chatd() {
    local name=$1 dir
    dir=$(mktemp -d /tmp/compare-chatd.XXXXXX)
    dirs+=("$dir")
    local bin=target/release/chatd ws=(--ws-listen 127.0.0.1:0)
    if [ "$name" = chatd0 ]; then bin=$BASE_BIN; ws=(); fi
    # shellcheck disable=SC2086
    "$bin" --data-dir "$dir" --shards "$2" --chatd-listen 127.0.0.1:0 \
        --statusd-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 "${ws[@]}" $CHATD_ARGS "${@:3}" >"$raw/$name.log" 2>&1 &
    chatd_pid[$name]=$!; pids+=("$!")
    chatd_port[$name]=$(listening_port "$raw/$name.log" chatd)
    admin_port[$name]=$(listening_port "$raw/$name.log" admin)
    if [ ${#ws[@]} -gt 0 ]; then ws_port[$name]=$(listening_port "$raw/$name.log" ws); fi
    admin_token[$name]=$(cat "$dir/admin.token")
}
targets=(floor)
if [ -n "$BASE_BIN" ]; then start_chatd chatd0 1; targets+=(chatd0); fi
start_chatd chatd1 1
targets+=(chatd1)
if [ "$CHATD2" = 1 ]; then start_chatd chatd2 2; targets+=(chatd2); fi
if [ "$WS" = 1 ]; then targets+=(chatd1ws); fi
if [ "$TLS" = 1 ]; then
    start_chatd chatd1tls 1 --tls-cert "$raw/tls-cert.pem" --tls-key "$raw/tls-key.pem"
    targets+=(chatd1tls)
fi
targets+=(redis nats)
if [ "$WS" = 1 ]; then targets+=(natsws); fi
log "floor pid $floor_pid; chatd1 pid ${chatd_pid[chatd1]}; redis-server $("$REDIS" --version | awk '{print $3}') pid $redis_pid;" \
    "nats-server $("$NATS" --version | awk '{print $2}') pid $nats_pid"

declare -A lg_args fc_args
for t in chatd0 chatd1 chatd2; do
    [ -n "${chatd_pid[$t]:-}" ] || continue
    lg_args[$t]="--chatd 127.0.0.1:${chatd_port[$t]} --admin 127.0.0.1:${admin_port[$t]} --admin-token ${admin_token[$t]} --server-pid ${chatd_pid[$t]}"
    fc_args[$t]="--proto chatd --port ${chatd_port[$t]} --server-pid ${chatd_pid[$t]}"
done
lg_args[floor]="--target floor --chatd 127.0.0.1:$floor_port --server-pid $floor_pid"
fc_args[floor]="--proto chatd --port $floor_port --server-pid $floor_pid"
lg_args[redis]="--target redis --redis 127.0.0.1:$redis_port --server-pid $redis_pid"
fc_args[redis]="--proto redis --port $redis_port --server-pid $redis_pid"
lg_args[nats]="--target nats --nats 127.0.0.1:$nats_port --server-pid $nats_pid"
fc_args[nats]="--proto nats --port $nats_port --server-pid $nats_pid"
# WebSocket and TLS: the same servers (chatd1, nats) over another
# transport, or chatd1tls; fanclient speaks TCP only (no fc_args).
lg_args[chatd1ws]="${lg_args[chatd1]} --transport ws --ws 127.0.0.1:${ws_port[chatd1]}"
lg_args[natsws]="--target nats --nats 127.0.0.1:$nats_ws_port --transport ws --server-pid $nats_pid"
if [ -n "${chatd_pid[chatd1tls]:-}" ]; then
    lg_args[chatd1tls]="--chatd 127.0.0.1:${chatd_port[chatd1tls]} --admin 127.0.0.1:${admin_port[chatd1tls]} --admin-token ${admin_token[chatd1tls]} --server-pid ${chatd_pid[chatd1tls]} --transport tls --tls-ca $raw/tls-cert.pem"
fi
common="--rooms $ROOMS --members $MEMBERS --publishers $PUBLISHERS --size $SIZE --threads $THREADS --warmup $WARMUP --quiet"
fc_common="--rooms $ROOMS --members $MEMBERS --publishers $PUBLISHERS --size $SIZE --warmup $WARMUP"

# run TARGET NAME EXTRA...: one loadgen run; its report lands in $raw/TARGET-NAME.json
run() {
    local tgt=$1 name=$2; shift 2
    local dir="$raw/$tgt-$name.d" rc=0 json
    # shellcheck disable=SC2086
    $LG fanout ${lg_args[$tgt]} $common --report-dir "$dir" "$@" >"$raw/$tgt-$name.txt" 2>&1 || rc=$?
    json=$(ls "$dir"/*.json 2>/dev/null | head -1 || true)
    if [ -n "$json" ]; then
        jq --argjson rc "$rc" '. + {exit_code: $rc}' "$json" >"$raw/$tgt-$name.json"
    else
        echo "{\"exit_code\": $rc}" >"$raw/$tgt-$name.json"
    fi
    rm -rf "$dir"
    log "$tgt $name: exit $rc, $(jq -r '"\(.deliveries_per_sec // 0 | floor) deliveries/s, p99 \(.latency_ms.p99 // "-") ms, send lag p99 \(.send_lag_ms.p99 // "-") ms, \(.trust.verdict // "-")"' "$raw/$tgt-$name.json")"
}

# Users, rooms and tokens for fanclient on a chatd (one curl process, the
# admin API's PUT /v1/rooms/{id} and POST /v1/tokens): writes the tokens,
# one per line in fanclient's user order, to FILE.
fc_seq=0
provision_fc() {
    local tgt=$1 base=$2 file=$3 cfg="$raw/curl.cfg" slots=$((PUBLISHERS + MEMBERS))
    local url="http://127.0.0.1:${admin_port[$tgt]}"
    # Options reset at each "next": every transfer names its headers.
    local hdr="header = \"Authorization: Bearer ${admin_token[$tgt]}\"
header = \"Content-Type: application/json\""
    {
        for r in $(seq 0 $((ROOMS - 1))); do
            local ms="" s
            for s in $(seq 0 $((slots - 1))); do ms="$ms\\\"$((base + r * slots + s))\\\","; done
            [ "$r" = 0 ] || echo next
            printf '%s\nurl = "%s/v1/rooms/%s"\nrequest = "PUT"\ndata = "{\\"members\\":[%s]}"\noutput = "/dev/null"\n' \
                "$hdr" "$url" $((base + r)) "${ms%,}"
        done
        for u in $(seq 0 $((ROOMS * slots - 1))); do
            printf 'next\n%s\nurl = "%s/v1/tokens"\ndata = "{\\"userid\\":\\"%s\\",\\"ttl_secs\\":86400}"\nwrite-out = "\\n"\n' \
                "$hdr" "$url" $((base + u))
        done
    } >"$cfg"
    local rc=0
    curl -sf -K "$cfg" | jq -r .token >"$file" || rc=1
    rm -f "$cfg"
    [ "$rc" = 0 ] && [ "$(wc -l <"$file")" -eq $((ROOMS * slots)) ]
}

# fc TARGET NAME ARGS...: one fanclient run into $raw/TARGET-fc-NAME.json
fc() {
    local tgt=$1 name=$2; shift 2
    local extra=() rc=0
    if [ -z "${fc_args[$tgt]:-}" ]; then
        echo '{"exit_code": 0, "note": "fanclient speaks TCP only"}' >"$raw/$tgt-fc-$name.json"
        return 0
    fi
    fc_seq=$((fc_seq + 1))
    local base=$((2000000000000000 + fc_seq * 100000))
    if [ "$tgt" = chatd0 ] || [ "$tgt" = chatd1 ] || [ "$tgt" = chatd2 ]; then
        if ! provision_fc "$tgt" "$base" "$raw/tokens.txt"; then
            log "$tgt fanclient $name: provisioning through the admin API failed"
            echo '{"exit_code": 1}' >"$raw/$tgt-fc-$name.json"
            return 0
        fi
        extra=(--tokens "$raw/tokens.txt")
    fi
    # shellcheck disable=SC2086
    $FC ${fc_args[$tgt]} $fc_common --id-base "$base" "${extra[@]}" "$@" \
        >"$raw/$tgt-fc-$name.json" 2>"$raw/$tgt-fc-$name.txt" || rc=$?
    rm -f "$raw/tokens.txt"
    [ -s "$raw/$tgt-fc-$name.json" ] || echo '{}' >"$raw/$tgt-fc-$name.json"
    jq --argjson rc "$rc" '. + {exit_code: $rc}' "$raw/$tgt-fc-$name.json" >"$raw/tmp.json" \
        && mv "$raw/tmp.json" "$raw/$tgt-fc-$name.json"
    log "$tgt fanclient $name: exit $rc, $(jq -r '"\(.deliveries_per_sec // 0) deliveries/s, p50 \(.latency_us.p50 // "-") us, p99 \(.latency_us.p99 // "-") us"' "$raw/$tgt-fc-$name.json")"
}

# jv FILE EXPR: a value of a JSON file, "-" where missing or failed.
jv() { jq -r "if (.exit_code // 0) == 1 then \"-\" else ($2) // \"-\" end" "$1" 2>/dev/null || echo -; }

# --- (a) saturation, window sweep -----------------------------------------
declare -A best_w
for tgt in "${targets[@]}"; do
    best=0
    for w in $WINDOWS; do
        run "$tgt" "max-w$w" --max --window "$w" --duration "$SAT_DURATION"
        d=$(jq -r 'if .exit_code == 0 then (.deliveries_per_sec // 0) else 0 end' "$raw/$tgt-max-w$w.json")
        if awk -v d="$d" -v b="$best" 'BEGIN { exit !(d > b) }'; then best=$d; best_w[$tgt]=$w; fi
    done
    [ -n "${best_w[$tgt]:-}" ] || best_w[$tgt]=$(echo "$WINDOWS" | awk '{print $1}')
    cp "$raw/$tgt-max-w${best_w[$tgt]}.json" "$raw/$tgt-max.json"
    # --- (b) the independent client at the same window
    fc "$tgt" "max" --window "${best_w[$tgt]}" --duration "$SAT_DURATION"
done

# --- (c) paced, at shares of chatd1's saturation rate --------------------
sat_msgs=$(jv "$raw/chatd1-max.json" '.sent_per_sec')
[ "$sat_msgs" = - ] && sat_msgs=100000
rates=()
for pct in $RATE_PCTS; do
    rates+=("$(awk -v s="$sat_msgs" -v p="$pct" 'BEGIN { r = int(s * p / 100 / 1000) * 1000; if (r < 1000) r = 1000; print r }')")
done
for tgt in "${targets[@]}"; do
    for r in "${rates[@]}"; do
        run "$tgt" "rate-$r" --rate "$r" --duration "$DURATION"
    done
    fc "$tgt" "rate-${rates[0]}" --rate "${rates[0]}" --duration "$DURATION"
done

# --- table ---------------------------------------------------------------
fmt_k() { awk -v v="$1" 'BEGIN { if (v == "-" || v == "") print "-"; else if (v >= 1e6) printf "%.2fM", v / 1e6; else printf "%.0fk", v / 1000 }'; }
fmt_2() { awk -v v="$1" 'BEGIN { if (v == "-" || v == "") print "-"; else printf "%.2f", v }'; }
fmt_3() { awk -v v="$1" 'BEGIN { if (v == "-" || v == "") print "-"; else printf "%.3f", v }'; }
fmt_pct() { awk -v v="$1" 'BEGIN { if (v == "-" || v == "") print "-"; else printf "%.0f%%", v * 100 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || a == "" || b == "" || b + 0 <= 0) print "-"; else printf "%.2f", a / b }'; }
# agree A B: "+x%" difference of loadgen's A from fanclient's B, and "!" past AGREE_PCT
agree() { awk -v a="$1" -v b="$2" -v m="$AGREE_PCT" 'BEGIN { if (a == "-" || b == "-" || a == "" || b == "" || b + 0 <= 0) { print "-"; exit } d = (a - b) / b * 100; printf "%+.0f%%%s", d, (d > m || d < -m) ? " !" : "" }'; }
failmark() { [ "$(jq -r '.exit_code // 1' "$1")" = 0 ] || printf ' FAIL'; }

declare -A label=([floor]="floor" [chatd0]="chatd base ($BASE_REV, 1 shard)" [chatd1]="chatd 1 shard" [chatd2]="chatd 2 shards" [redis]="redis" [nats]="nats"
    [chatd1ws]="chatd 1 shard, ws" [chatd1tls]="chatd 1 shard, tls" [natsws]="nats, ws")
# row TITLE FILE-SUFFIX EXPR FORMAT [RATIOS]: one value per target; RATIOS
# yes adds chatd1/redis, chatd1/nats and chatd1/floor.
row() {
    local title=$1 suf=$2 expr=$3 f=$4 ratios=${5:-no} t v
    printf '| %s |' "$title"
    for t in "${targets[@]}"; do
        v=$(jv "$raw/$t-$suf.json" "$expr")
        printf ' %s%s |' "$("fmt_$f" "$v")" "$(failmark "$raw/$t-$suf.json")"
    done
    if [ "$ratios" = yes ]; then
        local c r n fl
        c=$(jv "$raw/chatd1-$suf.json" "$expr"); r=$(jv "$raw/redis-$suf.json" "$expr")
        n=$(jv "$raw/nats-$suf.json" "$expr"); fl=$(jv "$raw/floor-$suf.json" "$expr")
        echo " $(ratio "$c" "$r") | $(ratio "$c" "$n") | $(ratio "$c" "$fl") |"
    else
        echo ' | | |'
    fi
}
text_row() {  # text_row TITLE FUNC: FUNC TARGET prints the cell
    printf '| %s |' "$1"
    for t in "${targets[@]}"; do printf ' %s |' "$("$2" "$t")"; done
    echo ' | | |'
}
cell_window() { echo "${best_w[$1]}"; }
cell_limit() {
    jq -r '[(if .trust.client_bound then "client-bound" else empty end),
            (if .trust.server_bound then "server-bound" else empty end),
            (if .trust.box_bound then "box-bound" else empty end),
            (if .trust.box_busy then "busy box" else empty end)] | if length == 0 then "neither" else join(", ") end' \
        "$raw/$1-max.json" 2>/dev/null || echo -
}
cell_sweep() {
    local w out=""
    for w in $WINDOWS; do out="$out$w: $(fmt_k "$(jv "$raw/$1-max-w$w.json" '.deliveries_per_sec')")$(failmark "$raw/$1-max-w$w.json"), "; done
    echo "${out%, }"
}
cell_agree_sat() { agree "$(jv "$raw/$1-max.json" '.deliveries_per_sec')" "$(jv "$raw/$1-fc-max.json" '.deliveries_per_sec')"; }
cell_agree_cpu() { agree "$(jv "$raw/$1-max.json" '.server.deliveries_per_cpu_sec')" "$(jv "$raw/$1-fc-max.json" '.deliveries_per_server_cpu_sec')"; }
cell_floor_pct() {
    local a b
    a=$(jv "$raw/$1-max.json" '.server.deliveries_per_cpu_sec'); b=$(jv "$raw/floor-max.json" '.server.deliveries_per_cpu_sec')
    awk -v a="$a" -v b="$b" 'BEGIN { if (a == "-" || b == "-" || b + 0 <= 0) print "-"; else printf "%.0f%%", a / b * 100 }'
}
cell_trust() {
    jq -r 'if .exit_code != 0 then "FAIL" elif .trust.trustworthy then "yes" else
        ([(if .trust.send_lag_high then "send lag" else empty end), (if .trust.client_bound then "client-bound" else empty end),
          (if .trust.box_busy then "busy box" else empty end)] | "NO: " + join(", ")) end' \
        "$raw/$1-rate-$cur_rate.json" 2>/dev/null || echo -
}

{
    echo "# chatd vs its floor, Redis and NATS: fan-out, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); load average before the runs: $load_before, after: $(cut -d' ' -f1-3 /proc/loadavg). Clients and servers on the same box, loopback."
    echo "Servers: chatd $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- src 2>/dev/null || echo '+dirty'), floor (bench/floor.c), redis-server $("$REDIS" --version | awk '{print $3}' | sed 's/v=//'), nats-server $("$NATS" --version | awk '{print $2}')$([ -n "$BASE_BIN" ] && echo "; chatd base: $BASE_REV ($BASE_BIN)")."
    echo "Workload: $ROOMS rooms x $MEMBERS receivers, $PUBLISHERS publisher(s) per room on its own connection (in chatd and the floor a room member), $SIZE-byte payloads: $MEMBERS deliveries per message; $THREADS loadgen thread(s)."
    echo "Saturation: \`loadgen fanout --max --window W\` for W in $WINDOWS, ${SAT_DURATION} s each after ${WARMUP} s warm-up; each target's figure is its best window. Paced: ${DURATION} s at ${RATE_PCTS// /, } % of chatd 1 shard's saturation rate (${rates[*]} msg/s)."
    echo "chatd runs with: ${CHATD_ARGS:-(defaults)}."
    echo "Command: \`bench/compare.sh\` (ROOMS=$ROOMS MEMBERS=$MEMBERS PUBLISHERS=$PUBLISHERS SIZE=$SIZE WINDOWS=\"$WINDOWS\" RATE_PCTS=\"$RATE_PCTS\" SAT_DURATION=$SAT_DURATION DURATION=$DURATION THREADS=$THREADS QUICK=$QUICK${BASE_BIN:+ BASE_BIN=$BASE_BIN BASE_REV=$BASE_REV})"
    echo
    printf '| |'; for t in "${targets[@]}"; do printf ' %s |' "${label[$t]}"; done; echo ' chatd/redis | chatd/nats | chatd/floor |'
    printf '|---|'; for _ in "${targets[@]}"; do printf -- '---|'; done; echo '---|---|---|'
    text_row "saturation: deliveries/s by window" cell_sweep
    text_row "saturation: best window" cell_window
    row "saturation: deliveries/s (best window)" max '.deliveries_per_sec' k yes
    row "saturation: server cpu (cores)" max '.server.cores_used' 2 yes
    row "saturation: deliveries per server cpu-second" max '.server.deliveries_per_cpu_sec' k yes
    text_row "saturation: per cpu-second, % of the floor" cell_floor_pct
    row "saturation: loadgen busiest thread" max '.loadgen.busiest_thread' pct
    row "saturation: server busiest thread" max '.server.busiest_thread' pct
    text_row "saturation: limit (thread >= 90% of a core)" cell_limit
    row "saturation: other processes on the box (cores)" max '.others_cores' 2
    row "saturation: p50 ms" max '.latency_ms.p50' 2
    row "saturation: p99 ms" max '.latency_ms.p99' 2
    row "fanclient, same window: deliveries/s" fc-max '.deliveries_per_sec' k yes
    row "fanclient, same window: deliveries per server cpu-second" fc-max '.deliveries_per_server_cpu_sec' k yes
    row "fanclient, same window: its own cpu (cores)" fc-max '.client_cores' 2
    text_row "loadgen vs fanclient: deliveries/s" cell_agree_sat
    text_row "loadgen vs fanclient: per server cpu-second" cell_agree_cpu
    for cur_rate in "${rates[@]}"; do
        row "paced $cur_rate msg/s: p50 ms" "rate-$cur_rate" '.latency_ms.p50' 3 yes
        row "paced $cur_rate msg/s: p99 ms" "rate-$cur_rate" '.latency_ms.p99' 3 yes
        row "paced $cur_rate msg/s: loadgen send lag p99 ms" "rate-$cur_rate" '.send_lag_ms.p99' 3
        text_row "paced $cur_rate msg/s: trustworthy (send lag, loadgen cpu)" cell_trust
        row "paced $cur_rate msg/s: other processes on the box (cores)" "rate-$cur_rate" '.others_cores' 2
        row "paced $cur_rate msg/s: deliveries/s" "rate-$cur_rate" '.deliveries_per_sec' k
        row "paced $cur_rate msg/s: server cpu (cores)" "rate-$cur_rate" '.server.cores_used' 2 yes
    done
    row "fanclient paced ${rates[0]} msg/s: p50 ms" "fc-rate-${rates[0]}" '(.latency_us.p50 // null) / 1000' 3 yes
    row "fanclient paced ${rates[0]} msg/s: p99 ms" "fc-rate-${rates[0]}" '(.latency_us.p99 // null) / 1000' 3 yes
    row "fanclient paced ${rates[0]} msg/s: send lag p99 ms" "fc-rate-${rates[0]}" '(.send_lag_us.p99 // null) / 1000' 3
    if [ "$WS" = 1 ] || [ "$TLS" = 1 ]; then
        echo
        echo "WebSocket and TLS, same run (each at its best window; server CPU per delivery is the inverse of deliveries per server cpu-second):"
        echo
        echo '| | chatd ws / chatd tcp | chatd tls / chatd tcp | chatd ws / nats ws | nats ws / nats tcp |'
        echo '|---|---|---|---|---|'
        pair() { ratio "$(jv "$raw/$1-max.json" "$3")" "$(jv "$raw/$2-max.json" "$3")"; }
        echo "| saturation: deliveries/s | $(pair chatd1ws chatd1 .deliveries_per_sec) | $(pair chatd1tls chatd1 .deliveries_per_sec) | $(pair chatd1ws natsws .deliveries_per_sec) | $(pair natsws nats .deliveries_per_sec) |"
        echo "| saturation: server CPU per delivery | $(pair chatd1 chatd1ws .server.deliveries_per_cpu_sec) | $(pair chatd1 chatd1tls .server.deliveries_per_cpu_sec) | $(pair natsws chatd1ws .server.deliveries_per_cpu_sec) | $(pair nats natsws .server.deliveries_per_cpu_sec) |"
        echo "| saturation: deliveries per server cpu-second | $(pair chatd1ws chatd1 .server.deliveries_per_cpu_sec) | $(pair chatd1tls chatd1 .server.deliveries_per_cpu_sec) | $(pair chatd1ws natsws .server.deliveries_per_cpu_sec) | $(pair natsws nats .server.deliveries_per_cpu_sec) |"
        r0=${rates[0]}
        p99() { jv "$raw/$1-rate-$r0.json" .latency_ms.p99; }
        echo "| paced $r0 msg/s: p99 | $(ratio "$(p99 chatd1ws)" "$(p99 chatd1)") | $(ratio "$(p99 chatd1tls)" "$(p99 chatd1)") | $(ratio "$(p99 chatd1ws)" "$(p99 natsws)") | $(ratio "$(p99 natsws)" "$(p99 nats)") |"
    fi
    echo
    echo "Ratios compare chatd with 1 shard: above 1 is better for chatd in throughput rows, worse in latency and CPU rows."
    echo "Per server cpu-second: deliveries over the server's utime+stime in the measured window (all its threads), the fairest figure across thread models."
    echo "limit: a loadgen thread at >= 90% of a core makes a run client-bound (its figure is a lower bound for the server); server-bound: a server thread >= 90%; box-bound: the two together use >= 90% of all cores; busy box: other processes used >= 0.25 cores (from /proc/stat), which moves every figure but the per-CPU ones."
    echo "fanclient (bench/fanclient.c) is the independent check: a \"!\" marks a difference above $AGREE_PCT%. FAIL: the run did not verify (see its .txt). Raw reports: $raw/."
    echo "Took $(( $(date +%s) - t_begin )) s."
} | tee "$table"
log "table written to $table"
