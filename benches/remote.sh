#!/usr/bin/env bash
# Remote cache benchmarks (numbers in docs/remote-cache.md):
#  1. warm download of the example's outputs from a loopback server vs rebuilding them;
#  2. one 1 GiB blob up and down, with the server's and the client's peak RSS;
#  3. 10,000 small blobs up and down;
#  4. 32 concurrent clients, 10,000 mixed requests: zero errors, zero corrupt responses.
# Usage: bash benches/remote.sh   (BIG_MIB=1024 SMALL=10000 CLIENTS=32 REQUESTS=10000 RUNS=5)
set -euo pipefail
cd "$(dirname "$0")/.."

BIG_MIB=${BIG_MIB:-1024}
SMALL=${SMALL:-10000}
CLIENTS=${CLIENTS:-32}
REQUESTS=${REQUESTS:-10000}
RUNS=${RUNS:-5}

cargo build --release -q -p mlbuild
MLBUILD=${MLBUILD:-$PWD/target/release/mlbuild}
BENCH=$(cargo bench -p mlbuild-remote --bench remote --no-run 2>&1 \
  | grep -o 'target/release/deps/remote-[0-9a-f]*' | head -1)
[ -x "$BENCH" ] || { echo "cannot find the remote bench binary" >&2; exit 1; }

tmp=$(mktemp -d)
server_pid=
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

# Starts `mlbuild cache serve` under GNU time on a free port; sets $url and $server_pid.
start_server() {
  local name=$1
  /usr/bin/time -v -o "$tmp/$name.time" "$MLBUILD" cache serve --listen 127.0.0.1:0 \
    --dir "$tmp/$name-dir" --max-size 20G --anonymous write >"$tmp/$name.out" 2>/dev/null &
  server_pid=$!
  for _ in $(seq 100); do
    url=$(sed -n 's/^listening on //p' "$tmp/$name.out")
    [ -n "$url" ] && return
    sleep 0.05
  done
  echo "server did not start" >&2; exit 1
}

# Stops the server gracefully (SIGTERM to mlbuild, not to time) and prints its peak RSS.
stop_server() {
  local name=$1
  pkill -TERM -P "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=
  echo "  server peak RSS: $(awk -F': ' '/Maximum resident/ {printf "%.1f MiB", $2/1024}' "$tmp/$name.time")"
}

peak() { awk -F': ' '/Maximum resident/ {printf "%.1f MiB", $2/1024}' "$1"; }

echo "== 1. example: warm download vs rebuild ($RUNS runs each)"
start_server example
for c in a b; do
  mkdir -p "$tmp/$c"
  (cd examples/fraud && tar --exclude=mlbuild-out -cf - .) | tar -xf - -C "$tmp/$c"
  printf '\n[remote]\nurl = "%s"\n' "$url" >>"$tmp/$c/MLBUILD.toml"
done
CI=1 "$MLBUILD" -C "$tmp/a" --store "$tmp/store-a" build //models:fraud >/dev/null 2>&1
hyperfine -N --runs "$RUNS" --export-json "$tmp/example.json" \
  --prepare "rm -rf $tmp/store-b $tmp/b/mlbuild-out" \
  -n download "$MLBUILD -C $tmp/b --store $tmp/store-b build //models:fraud" \
  -n rebuild "$MLBUILD -C $tmp/b --store $tmp/store-b build //models:fraud --no-remote" \
  | grep -E 'Time|±' || true
python3 - "$tmp/example.json" <<'PY'
import json, sys
r = {x["command"]: x["median"] for x in json.load(open(sys.argv[1]))["results"]}
print(f"  median download {r['download']*1e3:.0f} ms, rebuild {r['rebuild']*1e3:.0f} ms: "
      f"download is {r['rebuild']/r['download']:.1f}x faster (target >= 5x)")
PY
stop_server example

echo "== 2. one ${BIG_MIB} MiB blob up and down"
start_server big
/usr/bin/time -v -o "$tmp/big-client.time" "$BENCH" blob "$url" "$BIG_MIB"
echo "  client peak RSS: $(peak "$tmp/big-client.time")"
stop_server big

echo "== 3. $SMALL small blobs up and down"
start_server small
/usr/bin/time -v -o "$tmp/small-client.time" "$BENCH" small "$url" "$SMALL"
echo "  client peak RSS: $(peak "$tmp/small-client.time")"
stop_server small

echo "== 4. $CLIENTS clients, $REQUESTS mixed requests"
start_server load
"$BENCH" load "$url" "$CLIENTS" "$REQUESTS"
stop_server load
