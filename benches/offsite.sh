#!/usr/bin/env bash
# Off-site benchmark: jellysnap vs restic against one S3-compatible server (SeaweedFS
# `weed mini` on loopback), counting requests and bytes through a proxy
# (benches/s3count.py). Not run in CI. See benches/README.md.
#
# Scenarios (both tools, same data, same server, one run):
#   first      first backup into an empty bucket prefix: bytes up, requests, seconds
#   no-change  second backup, nothing changed: requests
#   day        backup after `gen_dataset --day-of-changes` (database included): bytes up
#   db-day     backup after a day of changes to the database alone: bytes up
#   restore    restore of the latest snapshot from the server: seconds (caches dropped);
#              again straight from the server, without the proxy (restore-direct)
#   copy-day   copy of the day's snapshot from a local repository to the server, the
#              first snapshot already there: bytes up, requests
#   gc         after 30% of the metadata and trickplay files change and all but the
#              newest snapshot are forgotten: gc (restic: prune) requests, bytes down
#
# Environment: SCALE_MIB (default 512), BENCH_DIR, SEED, KEEP, SKIP_BUILD as in e2e.sh.
set -uo pipefail

cd "$(dirname "$0")/.." || exit 1
REPO_ROOT=$(pwd)
SCALE_MIB=${SCALE_MIB:-512}
SEED=${SEED:-1}
KEEP=${KEEP:-0}
if [[ -n "${BENCH_DIR:-}" ]]; then KEEP=1; mkdir -p "$BENCH_DIR"; else
    BENCH_DIR=$(mktemp -d "${TMPDIR:-/var/tmp}/jellysnap-offsite.XXXXXX"); fi
BENCH_DIR=$(cd "$BENCH_DIR" && pwd)
JS="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/jellysnap"
GEN="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/examples/gen_dataset"
SRC="$BENCH_DIR/src"
DATA="$SRC/config"
OUT="$BENCH_DIR/results"
LOGS="$BENCH_DIR/logs"
mkdir -p "$OUT" "$LOGS"

log() { printf '[offsite %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
    if [[ "$KEEP" != 1 ]]; then rm -rf -- "$BENCH_DIR"; else log "work dir kept: $BENCH_DIR"; fi
}
trap cleanup EXIT

command -v restic >/dev/null || apt-get install -y restic >/dev/null 2>&1 || die "restic missing"
command -v weed >/dev/null || pip install -q --require-hashes -r .ci/requirements-s3.txt \
    || die "weed missing (pip install --require-hashes -r .ci/requirements-s3.txt)"
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    cargo build --release --examples --bins || die "build failed"
fi

# --- the server and the counting proxy ---------------------------------------------------
export AWS_ACCESS_KEY_ID=benchkey AWS_SECRET_ACCESS_KEY=benchsecret AWS_REGION=us-east-1
export RESTIC_PASSWORD=bench RESTIC_CACHE_DIR="$BENCH_DIR/restic-cache"
export XDG_CACHE_HOME="$BENCH_DIR/js-cache"
cat >"$BENCH_DIR/s3.json" <<JSON
{"identities":[{"name":"bench","credentials":[{"accessKey":"benchkey","secretKey":"benchsecret"}],"actions":["Admin","Read","Write","List","Tagging"]}]}
JSON
base=$((20000 + RANDOM % 20000))
flags=(master.port master.port.grpc volume.port volume.port.grpc filer.port filer.port.grpc
       s3.port s3.port.grpc admin.port admin.port.grpc s3.port.iceberg s3.port.lance)
args=()
for i in "${!flags[@]}"; do args+=("-${flags[$i]}=$((base + i))"); done
S3PORT=$((base + 6)); PPORT=$((base + 40))
mkdir -p "$BENCH_DIR/weed"
weed mini -dir="$BENCH_DIR/weed" -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.telemetry=false \
    -admin.ui=false -webdav=false -s3.config="$BENCH_DIR/s3.json" "${args[@]}" \
    >"$LOGS/weed.log" 2>&1 &
PIDS+=($!)
python3 benches/s3count.py "$PPORT" "$S3PORT" >"$LOGS/proxy.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 120); do
    curl -s -o /dev/null "http://127.0.0.1:$S3PORT/" && curl -s -o /dev/null "http://127.0.0.1:$PPORT/__stats" && break
    sleep 0.5
done
curl -sf --aws-sigv4 "aws:amz:us-east-1:s3" --user "benchkey:benchsecret" -X PUT \
    "http://127.0.0.1:$S3PORT/bench" >/dev/null || die "cannot create the bucket (see $LOGS/weed.log)"
EP="http://127.0.0.1:$PPORT/bench"
JS_REPO="s3:$EP/jellysnap"
RS_REPO="s3:$EP/restic"

reset() { curl -sf -X POST "http://127.0.0.1:$PPORT/__reset" >/dev/null; }
stats() { curl -sf "http://127.0.0.1:$PPORT/__stats" >"$OUT/$1.json"; }
drop() { sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; }
# measure NAME CMD...: counters and wall seconds of one command
measure() {
    local name=$1; shift
    drop; reset
    local t0; t0=$(date +%s.%N)
    "$@" >"$LOGS/$name.log" 2>&1 || log "$name FAILED (exit $?): $(tail -n 3 "$LOGS/$name.log")"
    echo "$(date +%s.%N) - $t0" | bc >"$OUT/$name.secs"
    stats "$name"
}

# --- data --------------------------------------------------------------------------------
log "generating ${SCALE_MIB} MiB dataset"
"$GEN" --out "$SRC" --layout docker --scale-mib "$SCALE_MIB" --seed "$SEED" >"$LOGS/gen.txt" || die "gen_dataset failed"
EXCL=(--exclude "$SRC/cache" --exclude "$DATA/log" --exclude "$DATA/cache" --exclude "$DATA/transcodes"
      --exclude "$DATA/data/backups" --exclude "*-wal" --exclude "*-shm")
RS_INIT=(); restic init --help | grep -q -- --repository-version && RS_INIT=(--repository-version 2)

restic -r "$RS_REPO" init "${RS_INIT[@]}" >"$LOGS/rs-init.log" 2>&1 || die "restic init failed"
"$JS" --repo "$JS_REPO" init >"$LOGS/js-init.log" 2>&1 || die "jellysnap init failed: $(cat "$LOGS/js-init.log")"

both() { # both SCENARIO
    measure "js-$1" "$JS" --repo "$JS_REPO" backup --data-dir "$DATA"
    measure "rs-$1" restic -r "$RS_REPO" backup "${EXCL[@]}" "$DATA"
}
both first
both no-change
"$GEN" --out "$SRC" --layout docker --seed "$((SEED + 1000))" --day-of-changes >"$LOGS/day.txt" || die "day of changes failed"
both day
DAY_FROM=$(sed -n 's/.*mtimes from \([0-9-]* [0-9:]*\).*/\1/p' "$LOGS/day.txt")
DAY_FILES=$(find "$DATA" -type f -newermt "$DAY_FROM" ! -name 'jellyfin.db*' -printf '%s\n' | awk '{s += $1} END {print s + 0}')
# A day in which only the database changed: the generator's day of changes applied to a
# copy of the data dir, and only its jellyfin.db brought back. What each tool uploads for
# the database alone (the day above is mostly new images, which both must upload whole).
cp -a "$SRC" "$BENCH_DIR/dbday" || die "cannot copy the data dir"
"$GEN" --out "$BENCH_DIR/dbday" --layout docker --seed "$((SEED + 2000))" --day-of-changes >"$LOGS/dbday.txt" \
    || die "day of changes (database) failed"
cp "$BENCH_DIR/dbday/config/data/jellyfin.db" "$DATA/data/jellyfin.db" || die "cannot copy the database"
rm -rf -- "$BENCH_DIR/dbday" "$DATA/data/jellyfin.db-wal" "$DATA/data/jellyfin.db-shm"
both db-day
measure js-restore "$JS" --repo "$JS_REPO" restore latest --target "$BENCH_DIR/restore-js"
measure rs-restore restic -r "$RS_REPO" restore latest --target "$BENCH_DIR/restore-rs"
# The same restores straight from the server: the proxy relays every byte through Python,
# which bounds both tools alike; its counts are above.
rm -rf -- "$BENCH_DIR/restore-js" "$BENCH_DIR/restore-rs"
measure js-restore-direct "$JS" --repo "s3:http://127.0.0.1:$S3PORT/bench/jellysnap" restore latest --target "$BENCH_DIR/restore-js"
measure rs-restore-direct restic -r "s3:http://127.0.0.1:$S3PORT/bench/restic" restore latest --target "$BENCH_DIR/restore-rs"
rm -rf -- "$BENCH_DIR/restore-js" "$BENCH_DIR/restore-rs"

# copy: local repositories with the first and the day's snapshot; the first is copied
# beforehand, the day's is measured.
"$GEN" --out "$BENCH_DIR/src2" --layout docker --scale-mib "$SCALE_MIB" --seed "$SEED" >/dev/null
D2="$BENCH_DIR/src2/config"
"$JS" --repo "$BENCH_DIR/local-js" backup --init --name first --data-dir "$D2" >/dev/null 2>&1
restic -r "$BENCH_DIR/local-rs" init "${RS_INIT[@]}" >/dev/null 2>&1
restic -r "$BENCH_DIR/local-rs" backup --tag first "${EXCL[@]}" "$D2" >/dev/null 2>&1
"$GEN" --out "$BENCH_DIR/src2" --layout docker --seed "$((SEED + 1000))" --day-of-changes >/dev/null
"$JS" --repo "$BENCH_DIR/local-js" backup --name day --data-dir "$D2" >/dev/null 2>&1
restic -r "$BENCH_DIR/local-rs" backup --tag day "${EXCL[@]}" "$D2" >/dev/null 2>&1
"$JS" --repo "$BENCH_DIR/local-js" copy first --to "s3:$EP/js-copy" --init >"$LOGS/js-copy-first.log" 2>&1
export RESTIC_FROM_PASSWORD=bench
restic -r "s3:$EP/rs-copy" init "${RS_INIT[@]}" --from-repo "$BENCH_DIR/local-rs" --copy-chunker-params >/dev/null 2>&1
restic -r "s3:$EP/rs-copy" copy --from-repo "$BENCH_DIR/local-rs" --tag first >"$LOGS/rs-copy-first.log" 2>&1
measure js-copy-day "$JS" --repo "$BENCH_DIR/local-js" copy --to "s3:$EP/js-copy"
measure rs-copy-day restic -r "s3:$EP/rs-copy" copy --from-repo "$BENCH_DIR/local-rs"

# gc after 30% churn
python3 - "$DATA" <<'PY'
import os, random, sys
random.seed(7)
files = [os.path.join(d, f) for d, _, fs in os.walk(sys.argv[1]) for f in fs
         if ("metadata" in d or "trickplay" in d)]
for f in random.sample(files, len(files) * 3 // 10):
    n = os.path.getsize(f)
    with open(f, "wb") as out:
        out.write(os.urandom(n))
PY
"$JS" --repo "$JS_REPO" backup --data-dir "$DATA" >/dev/null 2>&1
restic -r "$RS_REPO" backup "${EXCL[@]}" "$DATA" >/dev/null 2>&1
"$JS" --repo "$JS_REPO" forget --keep-last 1 >/dev/null 2>&1
restic -r "$RS_REPO" forget --keep-last 1 >/dev/null 2>&1
# In a bucket gc marks, and a later gc deletes once the grace period has passed: both
# runs are measured together (--grace 0: no other machine uses the bucket).
measure js-gc sh -c "'$JS' --repo '$JS_REPO' gc --grace 0 && '$JS' --repo '$JS_REPO' gc --grace 0"
measure rs-gc restic -r "$RS_REPO" prune

# --- report ------------------------------------------------------------------------------
j() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$OUT/$1.json" "$2" 2>/dev/null || echo "?"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b > 0) printf "%.2f", a / b; else print "-" }'; }
mib() { awk -v b="$1" 'BEGIN { if (b ~ /^[0-9]+$/) printf "%.1f", b / 1048576; else print "?" }'; }
echo
echo "## jellysnap vs restic on one S3 server (SeaweedFS on loopback) — ${SCALE_MIB} MiB dataset"
echo
echo "| scenario | jellysnap requests | restic requests | jellysnap MiB up | restic MiB up | up ratio (js/restic) | jellysnap MiB down | restic MiB down | jellysnap s | restic s | time ratio (restic/js) |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for s in first no-change day db-day restore restore-direct copy-day gc; do
    jr=$(j "js-$s" requests); rr=$(j "rs-$s" requests)
    ju=$(j "js-$s" bytes_up); ru=$(j "rs-$s" bytes_up)
    jd=$(j "js-$s" bytes_down); rd=$(j "rs-$s" bytes_down)
    jt=$(cat "$OUT/js-$s.secs" 2>/dev/null || echo "?"); rt=$(cat "$OUT/rs-$s.secs" 2>/dev/null || echo "?")
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %.1f | %.1f | %s |\n' "$s" "$jr" "$rr" "$(mib "$ju")" "$(mib "$ru")" \
        "$(ratio "$ju" "$ru")" "$(mib "$jd")" "$(mib "$rd")" "$jt" "$rt" "$(ratio "$rt" "$jt")"
done
echo
echo "- the day's new and rewritten files, the database aside (every tool uploads them): $(mib "$DAY_FILES") MiB"
echo "- restore: its requests and bytes, through the counting proxy, which relays every byte through Python and so bounds both tools' times alike"
echo "- restore-direct: the same restore straight from the server, for its time (nothing is counted there)"
echo "- requests by method (jellysnap no-change): $(cat "$OUT/js-no-change.json" 2>/dev/null)"
