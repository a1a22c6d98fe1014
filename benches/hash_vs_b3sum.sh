#!/usr/bin/env bash
# 1. Hashing throughput of mlbuild_digest::hash_file vs b3sum on the same 1 GiB file
#    of random data (page cache warm for both: nothing is dropped).
# 2. That an unchanged 1 GiB source costs a stat, not a read: a one-target workspace
#    with the 1 GiB file as a src is built once, then its no-op build is timed and
#    traced, next to the same workspace with a 1-byte src.
#
# Environment:
#   SIZE_MIB=1024     size of the test file
#   RUNS=5            runs of each hasher (and >= 10 no-op runs)
#   MLBUILD=path      mlbuild binary (default: cargo build --release -p mlbuild)
#   SKIP_NOOP=1       only compare hashing (part 1)
#   SANDBOX_PATH=a:b  write [sandbox] path = [a, b] into the workspaces' MLBUILD.toml
#   BENCH_DIR=dir     where to put the file and workspaces (default: a temp dir, removed at exit)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SIZE_MIB=${SIZE_MIB:-1024}
RUNS=${RUNS:-5}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

if ! command -v b3sum >/dev/null; then
    echo "installing b3sum from crates.io" >&2
    cargo install b3sum --locked >&2
fi
(cd "$ROOT" && cargo build --release -p mlbuild-digest --example hashfile >&2)
HASHFILE=$TARGET_DIR/release/examples/hashfile

if [[ -n "${BENCH_DIR:-}" ]]; then
    mkdir -p "$BENCH_DIR"; WORK=$BENCH_DIR
else
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/mlbuild-hash.XXXXXX")
    trap 'rm -rf "$WORK"' EXIT
fi
FILE=$WORK/big.bin
if [[ ! -f $FILE || $(stat -c %s "$FILE") -ne $((SIZE_MIB << 20)) ]]; then
    echo "writing $SIZE_MIB MiB of random data to $FILE" >&2
    head -c $((SIZE_MIB << 20)) /dev/urandom >"$FILE"
fi
BYTES=$(stat -c %s "$FILE")
cat "$FILE" >/dev/null   # warm the page cache

median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
# time_cmd RUNS cmd...: median wall seconds over RUNS runs (after one warm-up run)
time_cmd() {
    local runs=$1; shift
    "$@" >/dev/null
    for _ in $(seq "$runs"); do
        local t0 t1
        t0=$(date +%s%N); "$@" >/dev/null; t1=$(date +%s%N)
        echo $(( t1 - t0 ))
    done | median | awk '{printf "%.4f", $1/1e9}'
}

# ---------------------------------------------------------------- 1. throughput
d_b3=$(b3sum --no-names "$FILE")
d_ml=$("$HASHFILE" "$FILE" | awk '{print $1}')
if [[ $d_b3 != "$d_ml" ]]; then
    echo "DIGEST MISMATCH: b3sum $d_b3, mlbuild $d_ml" >&2; exit 1
fi
echo "digests agree: $d_b3" >&2

t_b3=$(time_cmd "$RUNS" b3sum --no-names "$FILE")
t_ml=$(time_cmd "$RUNS" "$HASHFILE" "$FILE")
echo "in-process timings of hash_file (excludes process start):" >&2
"$HASHFILE" "$FILE" --repeat "$RUNS" >&2

gibs() { awk -v b="$BYTES" -v t="$1" 'BEGIN {printf "%.2f", b / t / 1073741824}'; }
ratio=$(awk -v a="$t_b3" -v b="$t_ml" 'BEGIN {printf "%.0f", 100 * a / b}')
echo
echo "| hasher (whole process, median of $RUNS, $((BYTES >> 20)) MiB, page cache warm) | time | throughput |"
echo "|---|---:|---:|"
echo "| b3sum $(b3sum --version | awk '{print $2}') | ${t_b3} s | $(gibs "$t_b3") GiB/s |"
echo "| mlbuild_digest::hash_file (examples/hashfile) | ${t_ml} s | $(gibs "$t_ml") GiB/s |"
echo
echo "mlbuild hashing speed = ${ratio}% of b3sum (target >= 80%)"

[[ "${SKIP_NOOP:-0}" == 1 ]] && exit 0

# ------------------------------------------------- 2. unchanged big input = a stat
if [[ -z "${MLBUILD:-}" ]]; then
    (cd "$ROOT" && cargo build --release -p mlbuild >&2)
    MLBUILD=$TARGET_DIR/release/mlbuild
fi
command -v strace >/dev/null || apt-get install -y -qq strace >&2 || true

make_ws() { # make_ws DIR SRCFILE
    rm -rf "$1"; mkdir -p "$1/data"
    printf '[workspace]\nname = "bigfile"\n' >"$1/MLBUILD.toml"
    if [[ -n "${SANDBOX_PATH:-}" ]]; then
        printf '\n[sandbox]\npath = [%s]\n' "$(tr ':' '\n' <<<"$SANDBOX_PATH" | sed 's/.*/"&"/' | paste -sd, | sed 's/,/, /g')" >>"$1/MLBUILD.toml"
    fi
    cat >"$1/data/BUILD.toml" <<'EOF'
[target.size]
srcs = ["big.bin"]
cmd = ["sh", "-c", "wc -c < big.bin > {out}/o.txt"]
outs = ["o.txt"]
params = { v = 1 }
EOF
    # a hard link keeps the 1 GiB file in the page cache and costs no disk
    ln "$2" "$1/data/big.bin" 2>/dev/null || cp "$2" "$1/data/big.bin"
}
printf 'x' >"$WORK/small.bin"
make_ws "$WORK/ws-big" "$FILE"
make_ws "$WORK/ws-small" "$WORK/small.bin"

for k in big small; do
    t0=$(date +%s%N)
    "$MLBUILD" -C "$WORK/ws-$k" --store "$WORK/store-$k" build //... 2>"$WORK/first-$k.log" >/dev/null \
        || { cat "$WORK/first-$k.log" >&2; exit 1; }
    t1=$(date +%s%N)
    echo "first build ($k src): $(( (t1 - t0) / 1000000 )) ms: $(grep -iE '^build ' "$WORK/first-$k.log" | tail -1)" >&2
done

NOOP_RUNS=$(( RUNS > 10 ? RUNS : 20 ))
declare -A NOOP READS BIGOPEN
for k in big small; do
    b=("$MLBUILD" -C "$WORK/ws-$k" --store "$WORK/store-$k" build //...)
    NOOP[$k]=$(time_cmd "$NOOP_RUNS" "${b[@]}" 2>/dev/null | awk '{printf "%.1f", $1*1000}')
    "${b[@]}" 2>"$WORK/noop-$k.log" >/dev/null
    grep -q ' 0 executed' "$WORK/noop-$k.log" || echo "warning: no-op build of ws-$k executed something: $(tail -1 "$WORK/noop-$k.log")" >&2
    if command -v strace >/dev/null; then
        # read(2) calls and bytes, and whether big.bin was ever opened (vs only stat'ed)
        strace -f -qq -e trace=read,pread64,readv,openat,open -e signal=none -o "$WORK/strace-$k.txt" \
            "${b[@]}" >/dev/null 2>&1 || true
        READS[$k]=$(awk '/ (read|pread64|readv)\(/ { n++; if (match($0, /= [0-9]+$/)) s += substr($0, RSTART+2) } END {printf "%d calls, %d bytes", n, s}' "$WORK/strace-$k.txt")
        BIGOPEN[$k]=$(grep -E 'open(at)?\(.*big\.bin' "$WORK/strace-$k.txt" | grep -vc ENOENT || true)
    else
        READS[$k]="(no strace)"; BIGOPEN[$k]="?"
    fi
done
echo
echo "| no-op build of a 1-target workspace whose src is | median wall (of $NOOP_RUNS) | read(2) in the whole no-op (strace -f) | opens of big.bin |"
echo "|---|---:|---:|---:|"
echo "| a ${SIZE_MIB} MiB file | ${NOOP[big]} ms | ${READS[big]} | ${BIGOPEN[big]} |"
echo "| a 1-byte file | ${NOOP[small]} ms | ${READS[small]} | ${BIGOPEN[small]} |"
