#!/usr/bin/env bash
# The test command of the README: every unit and integration test, with the
# integration tests run once per I/O backend (io_uring, then epoll) and
# once more over each other transport (WebSocket, TLS), then the
# JavaScript clients' tests (clients/run-tests.sh: the library against the
# real binary, the demo page in headless Chromium), which must all run.
# Installs what they need where it is missing (nats-server here, Chromium
# and the npm test packages in clients/run-tests.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# The cluster tests (tests/cluster.rs) run a real NATS server with
# JetStream; a fresh machine has none: install the distribution's package
# (as root), as clients/run-tests.sh does for Chromium.
if ! command -v nats-server >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "== installing nats-server (apt-get) =="
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq nats-server >/dev/null
    else
        echo "tests/run.sh: nats-server is required (apt-get install nats-server)" >&2
        exit 1
    fi
fi

cargo build --workspace --all-targets

echo "== tests on the io_uring backend (and unit tests) =="
CHATD_TEST_IO_BACKEND=uring cargo test --workspace -- --test-threads 4

echo "== integration tests on the epoll backend =="
CHATD_TEST_IO_BACKEND=epoll cargo test --workspace --test '*' -- --test-threads 4

# The whole integration suite again with every client over WebSocket
# (tungstenite), then over TLS (rustls): one backend each, so each backend
# meets each transport once without doubling the passes.
echo "== integration tests over WebSocket (io_uring) =="
CHATD_TEST_IO_BACKEND=uring CHATD_TEST_TRANSPORT=ws cargo test -p chatd --test '*' -- --test-threads 4

echo "== integration tests over TLS (epoll) =="
CHATD_TEST_IO_BACKEND=epoll CHATD_TEST_TRANSPORT=tls cargo test -p chatd --test '*' -- --test-threads 4

echo "== JavaScript clients (clients/run-tests.sh) =="
CHATD_JS_REQUIRE_WS=1 CHATD_BIN="$PWD/target/debug/chatd" clients/run-tests.sh
