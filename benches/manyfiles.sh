#!/usr/bin/env bash
# Many small files: jellysnap vs restic, backup and full restore of a data dir holding
# FILES small trickplay tiles (200 B - 3 KiB each, 100 per directory) beside the bundled
# sample server. Measures what the file count costs: time, and peak RSS, which must
# not grow with it. Not run in CI. See benches/README.md.
#
# Environment: FILES (default 300000), BENCH_DIR (default: a temp dir, removed unless
# KEEP=1; one you give is kept), SKIP_BUILD=1, RESTIC (default: restic on PATH).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
ROOT=$(pwd)
FILES=${FILES:-300000}
KEEP=${KEEP:-0}
if [[ -n "${BENCH_DIR:-}" ]]; then KEEP=1; mkdir -p "$BENCH_DIR"; else BENCH_DIR=$(mktemp -d "${TMPDIR:-/var/tmp}/jellysnap-many.XXXXXX"); fi
BENCH_DIR=$(cd "$BENCH_DIR" && pwd)
JS="$ROOT/target/release/jellysnap"
RESTIC=${RESTIC:-$(command -v restic || true)}
[[ -n "$RESTIC" ]] || { echo "restic missing (apt-get install -y restic)" >&2; exit 1; }
export RESTIC_PASSWORD=bench RESTIC_CACHE_DIR="$BENCH_DIR/restic-cache"
log() { printf '[many %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
cleanup() { [[ "$KEEP" == 1 ]] || rm -rf -- "$BENCH_DIR"; }
trap cleanup EXIT

[[ "${SKIP_BUILD:-0}" == 1 ]] || cargo build --release --bin jellysnap >&2 || exit 1

SRC="$BENCH_DIR/src"
rm -rf -- "$SRC" "$BENCH_DIR"/repo-* "$BENCH_DIR"/restore-* "$RESTIC_CACHE_DIR"
cp -a fixtures/sample "$SRC"
log "writing $FILES small files"
python3 - "$SRC/data/trickplay" "$FILES" <<'PY'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
rnd = random.Random(7)
for i in range(n):
    if i % 100 == 0:
        d = os.path.join(root, "%032x" % rnd.getrandbits(128), "320 - 10x10")
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "%d.jpg" % (i % 100)), "wb") as f:
        f.write(rnd.randbytes(rnd.randint(200, 3000)))
PY

drop() { sync; sleep 3; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; }
declare -A T M
timed() {
    local name=$1; shift
    drop
    log "$name"
    /usr/bin/time -f "%e %M" -o "$BENCH_DIR/$name.time" "$@" >"$BENCH_DIR/$name.log" 2>&1 \
        || { log "$name failed:"; tail -5 "$BENCH_DIR/$name.log" >&2; exit 1; }
    read -r T[$name] M[$name] <"$BENCH_DIR/$name.time"
}
"$RESTIC" -r "$BENCH_DIR/repo-restic" init -q >/dev/null
timed js-backup "$JS" --repo "$BENCH_DIR/repo-js" -q backup --init --data-dir "$SRC"
timed rs-backup "$RESTIC" -r "$BENCH_DIR/repo-restic" -q backup "$SRC"
timed js-restore "$JS" --repo "$BENCH_DIR/repo-js" -q restore latest --target "$BENCH_DIR/restore-js"
timed rs-restore "$RESTIC" -r "$BENCH_DIR/repo-restic" -q restore latest --target "$BENCH_DIR/restore-restic"

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
mb() { awk -v k="$1" 'BEGIN { printf "%.0f", k / 1024 }'; }
echo "## many small files: $FILES tiles beside fixtures/sample ($(du -sh "$SRC" | cut -f1))"
echo
echo "| step | jellysnap s | restic s | ratio (restic/jellysnap) | jellysnap max RSS MB | restic max RSS MB |"
echo "|---|---:|---:|---:|---:|---:|"
for s in backup restore; do
    echo "| $s | ${T[js-$s]} | ${T[rs-$s]} | $(ratio "${T[rs-$s]}" "${T[js-$s]}") | $(mb "${M[js-$s]}") | $(mb "${M[rs-$s]}") |"
done
