#!/usr/bin/env bash
# End-to-end benchmarks of the mlbuild binary on generated workspaces.
#
# For each size in $SIZES and shape in $SHAPES:
#   first build     wall time of building //... into a fresh store (--jobs = cores)
#   no-op build     median of >= $NOOP_RUNS runs of the same build (nothing to do)
#   param change    median of $PARAM_RUNS rebuilds after bumping one target's param
#   peak RSS        "Maximum resident set size" of the first and a no-op build
# and prints a Markdown table.
#
# Environment:
#   SIZES="1000 10000"   target counts (SIZES=1000 skips the slow 10,000 first build)
#   SHAPES="chain"       any of chain fanout mixed
#   NOOP_RUNS=20         no-op runs (>= 10)
#   PARAM_RUNS=5         one-param-change rebuilds
#   JOBS=$(nproc)        --jobs
#   MLBUILD=path         use this binary instead of building target/release/mlbuild
#   BENCH_DIR=dir        where to put workspaces/stores (default: a fresh temp dir, removed at exit
#                        unless KEEP=1)
#   SANDBOX_PATH=a:b     write [sandbox] path = [a, b] into the generated MLBUILD.toml
#   WAIT_IDLE=600        before each measurement wait (up to this many seconds) until the machine
#                        is idle (< 15% CPU busy over 2 s), so other jobs do not skew timings; 0 = don't
#   RESULTS=file         also write the table to this file
#   VS_NINJA=1           then compare with ninja on the same graph, runs alternating (benches/vs_ninja.py:
#                        first build, no-op, one-param change; medians and mlbuild/ninja ratios); 0 = skip
#   NINJA_FIRST_RUNS=1   alternating first builds in that comparison (each a whole build from scratch)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SIZES=${SIZES:-"1000 10000"}
SHAPES=${SHAPES:-"chain"}
NOOP_RUNS=${NOOP_RUNS:-20}
PARAM_RUNS=${PARAM_RUNS:-5}
JOBS=${JOBS:-$(nproc)}
GEN="python3 $ROOT/benches/gen_workspace.py"

if [[ -z "${MLBUILD:-}" ]]; then
    (cd "$ROOT" && cargo build --release -p mlbuild >&2)
    MLBUILD="${CARGO_TARGET_DIR:-$ROOT/target}/release/mlbuild"
fi
"$MLBUILD" --help >/dev/null

if [[ ! -x /usr/bin/time ]]; then
    echo "installing GNU time (for peak RSS)" >&2
    apt-get install -y -qq time >&2 || { echo "need /usr/bin/time (apt-get install time)" >&2; exit 1; }
fi
HAVE_HYPERFINE=0
command -v hyperfine >/dev/null && HAVE_HYPERFINE=1

if [[ -n "${BENCH_DIR:-}" ]]; then
    mkdir -p "$BENCH_DIR"
    WORK=$BENCH_DIR
else
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/mlbuild-bench.XXXXXX")
    [[ "${KEEP:-0}" == 1 ]] || trap 'rm -rf "$WORK"' EXIT
fi
echo "work dir: $WORK; binary: $MLBUILD; jobs: $JOBS; hyperfine: $HAVE_HYPERFINE" >&2

# median of numbers on stdin
median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
now_ns() { date +%s%N; }

# run_timed LOG cmd...: runs under /usr/bin/time -v; prints "wall_s rss_kib"
run_timed() {
    local log=$1; shift
    local t0 t1
    t0=$(now_ns)
    if ! /usr/bin/time -v "$@" >"$log.out" 2>"$log"; then
        echo "FAILED: $*" >&2; tail -20 "$log" >&2; return 1
    fi
    t1=$(now_ns)
    local rss
    rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$log")
    cpu=$(awk -F': ' '/User time/ {u=$2} /System time/ {s=$2} END {printf "%.2f", u+s}' "$log")
    echo "$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", (b-a)/1e9}') $rss $cpu"
}

# wait_idle: wait until the CPUs are < 15% busy over 2 s (or WAIT_IDLE seconds pass)
WAIT_IDLE=${WAIT_IDLE:-600}
wait_idle() {
    [[ $WAIT_IDLE -gt 0 ]] || return 0
    local deadline=$(( $(date +%s) + WAIT_IDLE )) a b busy
    while :; do
        a=$(awk '/^cpu / {print $2+$3+$4+$7+$8, $2+$3+$4+$5+$6+$7+$8}' /proc/stat)
        sleep 2
        b=$(awk '/^cpu / {print $2+$3+$4+$7+$8, $2+$3+$4+$5+$6+$7+$8}' /proc/stat)
        busy=$(awk -v a="$a" -v b="$b" 'BEGIN {split(a,x," "); split(b,y," "); print int(100*(y[1]-x[1])/(y[2]-x[2]+1))}')
        [[ $busy -lt 15 ]] && return 0
        if [[ $(date +%s) -ge $deadline ]]; then
            echo "warning: machine still ${busy}% busy after ${WAIT_IDLE}s; measuring anyway" >&2
            return 0
        fi
    done
}

summary_line() { grep -iE '^build (succeeded|failed)' "$1" | tail -1 || true; }

ROWS=()
READ_ROWS=()
for n in $SIZES; do
    for shape in $SHAPES; do
        ws="$WORK/ws-$shape-$n"
        store="$WORK/store-$shape-$n"
        rm -rf "$ws" "$store"
        $GEN --targets "$n" --shape "$shape" --out "$ws" ${SANDBOX_PATH:+--sandbox-path "$SANDBOX_PATH"}
        build=("$MLBUILD" -C "$ws" --store "$store" build //... --jobs "$JOBS")

        wait_idle
        echo "== $shape $n: first build" >&2
        read -r first_s first_rss first_cpu < <(run_timed "$WORK/first-$shape-$n.log" "${build[@]}")
        echo "   $(summary_line "$WORK/first-$shape-$n.log")" >&2

        wait_idle
        echo "== $shape $n: no-op build x$NOOP_RUNS" >&2
        # one no-op run checked for "0 executed" and measured for RSS
        read -r _ noop_rss _ < <(run_timed "$WORK/noop-$shape-$n.log" "${build[@]}")
        sl=$(summary_line "$WORK/noop-$shape-$n.log")
        echo "   $sl" >&2
        if ! grep -q ' 0 executed' <<<"$sl"; then
            echo "warning: the no-op build executed actions: $sl" >&2
        fi
        if [[ $HAVE_HYPERFINE == 1 ]]; then
            hyperfine -N --warmup 2 --runs "$NOOP_RUNS" --export-json "$WORK/noop-$shape-$n.json" \
                "${build[*]}" >&2
            noop_ms=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["results"][0]; print("%.1f" % (r["median"]*1000))' "$WORK/noop-$shape-$n.json")
            noop_min_ms=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["results"][0]; print("%.1f" % (r["min"]*1000))' "$WORK/noop-$shape-$n.json")
            noop_cpu_ms=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["results"][0]; print("%.0f" % ((r["user"]+r["system"])*1000))' "$WORK/noop-$shape-$n.json")
        else
            for _ in $(seq "$NOOP_RUNS"); do
                t0=$(now_ns); "${build[@]}" >/dev/null 2>&1; t1=$(now_ns)
                echo $(( (t1 - t0) / 1000 ))
            done >"$WORK/noop-$shape-$n.us"
            noop_ms=$(median <"$WORK/noop-$shape-$n.us" | awk '{printf "%.1f", $1/1000}')
            noop_min_ms=$(sort -g "$WORK/noop-$shape-$n.us" | head -1 | awk '{printf "%.1f", $1/1000}')
            noop_cpu_ms="?"
        fi

        wait_idle
        echo "== $shape $n: one-param-change rebuild x$PARAM_RUNS" >&2
        idx=$($GEN --leaf-index --targets "$n" --shape "$shape")
        : >"$WORK/param-$shape-$n.s"
        for i in $(seq "$PARAM_RUNS"); do
            $GEN --touch-param "$idx" --out "$ws" 2>/dev/null
            read -r s _ _ < <(run_timed "$WORK/param-$shape-$n-$i.log" "${build[@]}")
            echo "$s" >>"$WORK/param-$shape-$n.s"
        done
        param_sl=$(summary_line "$WORK/param-$shape-$n-$PARAM_RUNS.log")
        echo "   $param_sl" >&2
        param_executed=$(sed -nE 's/.* ([0-9]+) executed.*/\1/p' <<<"$param_sl")
        param_ms=$(median <"$WORK/param-$shape-$n.s" | awk '{printf "%.0f", $1*1000}')

        # Read-only commands, each the median of 5 runs, against the same workspace: every
        # one should cost at most 200 ms more than the no-op build (issue 11).
        tip=$($GEN --leaf-index --targets "$n" --shape "$shape")
        tip_label=$(grep -l "^\[target\.t$tip\]" "$ws"/*/BUILD.toml | head -1 | xargs dirname | xargs basename)
        tip_label="//$tip_label:t$tip"
        "${build[@]}" >/dev/null 2>&1
        READ_ONLY=()
        for cmd in "status" "why $tip_label" "query deps $tip_label" "query rdeps $tip_label" "graph" "graph --format mermaid" "stats" "history"; do
            for _ in 1 2 3 4 5; do
                t0=$(now_ns); "$MLBUILD" -C "$ws" --store "$store" $cmd >/dev/null 2>&1; t1=$(now_ns)
                echo $(( (t1 - t0) / 1000 ))
            done >"$WORK/ro.us"
            READ_ONLY+=("$cmd $(median <"$WORK/ro.us" | awk '{printf "%.0f", $1/1000}') ms")
        done
        READ_ROWS+=("| $n | $shape | $noop_ms ms | $(IFS='|'; echo "${READ_ONLY[*]}" | sed 's/|/ · /g') |")

        ROWS+=("| $n | $shape | $(printf '%.2f' "$first_s") s (CPU $first_cpu s) | $noop_ms ms (min $noop_min_ms, CPU $noop_cpu_ms) | $param_ms ms (${param_executed:-?} executed) | $((first_rss / 1024)) MiB | $((noop_rss / 1024)) MiB |")
    done
done

# The same graphs for ninja, measured alternately with mlbuild.
NINJA_TABLES=()
if [[ "${VS_NINJA:-1}" != 0 ]]; then
    if ! command -v ninja >/dev/null; then
        echo "ninja not found: skipping the comparison (apt-get install ninja-build)" >&2
    else
        for n in $SIZES; do
            for shape in $SHAPES; do
                wait_idle
                NINJA_TABLES+=("$(python3 "$ROOT/benches/vs_ninja.py" --mlbuild "$MLBUILD" --targets "$n" \
                    --shape "$shape" --work "$WORK" --jobs "$JOBS" --first-runs "${NINJA_FIRST_RUNS:-1}" \
                    --noop-runs "$NOOP_RUNS" --param-runs "$PARAM_RUNS" ${SANDBOX_PATH:+--sandbox-path "$SANDBOX_PATH"})")
            done
        done
    fi
fi

table() {
    echo "| targets | shape | first build | no-op (median of $NOOP_RUNS) | one-param change (median of $PARAM_RUNS) | peak RSS first | peak RSS no-op |"
    echo "|---:|---|---:|---:|---:|---:|---:|"
    printf '%s\n' "${ROWS[@]}"
    echo
    echo "| targets | shape | no-op | read-only commands (median of 5) |"
    echo "|---:|---|---:|---|"
    printf '%s\n' "${READ_ROWS[@]}"
    echo
    for t in "${NINJA_TABLES[@]}"; do
        printf '%s\n\n' "$t"
    done
    echo "$(date -u +%Y-%m-%d), $(nproc) cores, --jobs $JOBS, $(uname -r)"
}
table
[[ -n "${RESULTS:-}" ]] && table >"$RESULTS"
exit 0
