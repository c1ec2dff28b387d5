#!/usr/bin/env bash
# Every test of the JavaScript clients (clients/js, clients/web), in one
# command; installs what they need first:
#   - Chromium from the distribution (apt-get, as root) unless $CHROMIUM or
#     /usr/bin/chromium exists;
#   - the test-only npm packages of clients/tests (npm ci: playwright-core,
#     which drives that Chromium and downloads no browser, and typescript);
#   - target/debug/chatd (cargo build), unless $CHATD_BIN names a binary.
# Then: the library's unit tests, its end-to-end tests against the real
# chatd (TCP; WebSocket and TLS when the binary has them), the type check
# of index.d.ts, the demo page in Chromium against the in-memory server,
# and the browser end-to-end test (two pages + one TCP client, real chatd).
#
# End-to-end tests of a feature the binary lacks (--ws-listen, --tls-cert)
# skip with the reason; CHATD_JS_REQUIRE_WS=1 (CI) makes a missing flag,
# a missing openssl (the TLS test's certificate) or any skipped test an
# error instead.
set -euo pipefail
cd "$(dirname "$0")"
ROOT="$(cd .. && pwd)"

command -v node >/dev/null || { echo "run-tests.sh: node (20 or later) is required" >&2; exit 1; }
major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$major" -lt 20 ]; then
    echo "run-tests.sh: node $(node --version) is too old; 20 or later is required" >&2
    exit 1
fi

echo "== chromium =="
if [ -z "${CHROMIUM:-}" ] && [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" = 0 ]; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq chromium >/dev/null
    else
        echo "run-tests.sh: no Chromium: run 'apt-get install chromium' as root, or set CHROMIUM" >&2
        exit 1
    fi
fi
"${CHROMIUM:-/usr/bin/chromium}" --version

echo "== npm ci (clients/tests) =="
(cd tests && npm ci --no-audit --no-fund --loglevel=error)

export CHATD_BIN="${CHATD_BIN:-$ROOT/target/debug/chatd}"
if [ ! -x "$CHATD_BIN" ]; then
    echo "== cargo build (chatd) =="
    (cd "$ROOT" && cargo build --bin chatd)
fi
REQUIRE="${CHATD_JS_REQUIRE_WS:-0}"
for flag in --ws-listen --tls-cert; do
    if ! "$CHATD_BIN" --help | grep -q -- "$flag"; then
        if [ "$REQUIRE" = 1 ]; then
            echo "run-tests.sh: $CHATD_BIN has no $flag and CHATD_JS_REQUIRE_WS=1" >&2
            exit 1
        fi
        echo "note: $CHATD_BIN has no $flag: its end-to-end tests will skip"
    fi
done
if [ "$REQUIRE" = 1 ] && ! command -v openssl >/dev/null; then
    echo "run-tests.sh: no openssl (the TLS test makes its certificate with it) and CHATD_JS_REQUIRE_WS=1" >&2
    exit 1
fi

# run_tests NAME ARGS...: node --test ARGS; with CHATD_JS_REQUIRE_WS=1, a
# run that skipped any test fails.
run_tests() {
    local name=$1 log
    shift
    log=$(mktemp)
    node "${NODE_FLAGS[@]}" --test "$@" | tee "$log"
    if [ "$REQUIRE" = 1 ] && ! grep -q '^# skipped 0$' "$log"; then
        echo "run-tests.sh: $name skipped tests and CHATD_JS_REQUIRE_WS=1" >&2
        rm -f "$log"
        exit 1
    fi
    rm -f "$log"
}

# Node 20 has a global WebSocket only behind a flag (22 and later: always).
NODE_FLAGS=()
if [ "$(node -p 'typeof WebSocket')" != function ]; then
    NODE_FLAGS+=(--experimental-websocket)
fi

echo "== clients/js: unit and end-to-end tests =="
run_tests clients/js js/test/*.test.js

echo "== clients/js: type check of index.d.ts =="
(cd tests && npx tsc -p types/tsconfig.json)

echo "== clients/web: the demo page in Chromium =="
run_tests clients/web tests/*.test.js
