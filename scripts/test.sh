#!/usr/bin/env bash
# The test suite: what the README's second command runs and what CI calls.
# Installs what the tests need when it is missing, then runs the gates from
# shared/style.md: fmt, clippy, docs, tests (with the fixture accuracy checks),
# and a fuzz smoke run of every parser harness on stable.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

need_apt=()
command -v tshark >/dev/null 2>&1 || need_apt+=(tshark)
# XDP programs: rebuilt and compared with the committed objects.
command -v clang >/dev/null 2>&1 || need_apt+=(clang)
command -v llc >/dev/null 2>&1 || need_apt+=(llvm)
[ -f /usr/include/bpf/bpf_helpers.h ] || need_apt+=(libbpf-dev)
[ -f /usr/include/x86_64-linux-gnu/asm/types.h ] || need_apt+=(linux-libc-dev)
# Interop and services: Kamailio + sipp drive the relay over ng; the NQS
# sink tests start a private ClickHouse on loopback (no system service).
command -v kamailio >/dev/null 2>&1 || need_apt+=(kamailio)
command -v sipp >/dev/null 2>&1 || need_apt+=(sip-tester)
command -v clickhouse-server >/dev/null 2>&1 || need_apt+=(clickhouse-server clickhouse-client)
# The NQS web UI's browser test: headless Chromium over WebDriver.
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need_apt+=(chromium-driver)
# Network-namespace tests.
command -v ethtool >/dev/null 2>&1 || need_apt+=(ethtool)
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
# The promiscuous-capture test reads the API inside a namespace with curl.
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
if [ ${#need_apt[@]} -gt 0 ]; then
    log "installing ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Debian's packages would start their services at install time; the
    # tests start private instances themselves.
    made_policy=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
        made_policy=1
    fi
    if ! apt-get install -y --no-install-recommends "${need_apt[@]}" >/tmp/voxplane-apt.log 2>&1; then
        apt-get update >>/tmp/voxplane-apt.log 2>&1
        apt-get install -y --no-install-recommends "${need_apt[@]}" >>/tmp/voxplane-apt.log 2>&1
    fi
    [ -z "$made_policy" ] || rm -f /usr/sbin/policy-rc.d
fi

# The fixtures are ../shared/fixtures beside the checkout. Under CI they must
# be there: a missing fixture is a failure, not a skip.
if [ -z "${VOXPLANE_FIXTURES:-}" ] && [ -d ../shared/fixtures ]; then
    VOXPLANE_FIXTURES="$(cd ../shared/fixtures && pwd)"
    export VOXPLANE_FIXTURES
fi
if [ "${CI:-}" = "true" ]; then
    export VOXPLANE_REQUIRE_FIXTURES=1 VOXPLANE_REQUIRE_TOOLS=1
fi

log "cargo fmt --check"
cargo fmt --all -- --check

log "XDP objects are up to date (rebuilt and compared)"
sh xdp-progs/check.sh

log "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

log "cargo doc"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet

log "cargo test"
cargo test --workspace

log "the README's run command resolves to the voxplane binary"
cargo run --quiet -- version

log "fuzz smoke (stable: every harness over the fixture corpus and random inputs)"
cargo test -p wire --features fuzzing --test fuzz_smoke

log "cargo-fuzz targets compile (running them needs the fuzz toolchain; see wire/fuzz/README.md)"
cargo check --manifest-path wire/fuzz/Cargo.toml --quiet
