#!/usr/bin/env bash
# The test command of the README: every unit and integration test, with the
# integration tests run once per I/O backend (io_uring, then epoll), then
# the JavaScript clients' tests (clients/run-tests.sh: the library against
# the real binary, the demo page in headless Chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

cargo build --workspace --all-targets

echo "== tests on the io_uring backend (and unit tests) =="
CHATD_TEST_IO_BACKEND=uring cargo test --workspace -- --test-threads 4

echo "== integration tests on the epoll backend =="
CHATD_TEST_IO_BACKEND=epoll cargo test --workspace --test '*' -- --test-threads 4

echo "== JavaScript clients (clients/run-tests.sh) =="
CHATD_BIN="$PWD/target/debug/chatd" clients/run-tests.sh
