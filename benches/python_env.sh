#!/usr/bin/env bash
# Python environments: what building one costs cold and warm (local store, remote cache),
# what mounting one costs per action, and the no-op build of examples/sklearn.
#
#   MLBUILD=target/release/mlbuild MLBUILD_UV=/path/to/uv bash benches/python_env.sh
#
# Needs the network to PyPI for the cold build. Prints one line per figure; wall times
# are single runs (the environment build is dominated by download and disk), the
# per-action figure is the difference of two 40-action builds divided by 40.
set -euo pipefail
cd "$(dirname "$0")/.."
MLBUILD=${MLBUILD:-target/release/mlbuild}
: "${MLBUILD_UV:?set MLBUILD_UV to a uv binary (pip install uv==0.13.9)}"
export MLBUILD_UV CI=1
MLBUILD=$(realpath "$MLBUILD")
work=$(mktemp -d)
trap 'kill "${server:-0}" 2>/dev/null || true; rm -rf "$work"' EXIT
ms() { date +%s%3N; }
timed() { local t0; t0=$(ms); "$@" >/dev/null 2>&1; echo $(( $(ms) - t0 )); }

cp -r examples/sklearn "$work/a"
rm -rf "$work/a/mlbuild-out"
"$MLBUILD" cache serve --listen 127.0.0.1:0 --max-size 4G --anonymous write --dir "$work/cache" >"$work/serve.log" 2>&1 &
server=$!
for _ in $(seq 50); do grep -q listening "$work/serve.log" && break; sleep 0.1; done
url=$(sed -n 's/^listening on //p' "$work/serve.log")

echo "environment build, cold (download + install):  $(timed "$MLBUILD" -C "$work/a" --store "$work/s1" build //envs:train --remote "$url") ms"
echo "environment, warm local store (after clean):    $(timed sh -c "'$MLBUILD' -C '$work/a' --store '$work/s1' clean && '$MLBUILD' -C '$work/a' --store '$work/s1' build //envs:train --no-remote") ms"
cp -r examples/sklearn "$work/b"; rm -rf "$work/b/mlbuild-out"
echo "environment, warm remote cache (empty store):   $(timed "$MLBUILD" -C "$work/b" --store "$work/s2" build //envs:train --remote "$url") ms"
du -sh "$work/a/mlbuild-out/envs/train/env" | awk '{print "environment size: " $1}'
find "$work/a/mlbuild-out/envs/train/env" -type f | wc -l | awk '{print "environment files: " $1}'

# Per-action cost of mounting the environment: 40 trivial actions with it and without.
# Round 1 warms everything else (the environment's outputs linked and remembered, the
# sandbox probed); later rounds change every argv so all 80 actions run again.
bench_round() {
  for variant in with without; do
    dir="$work/a/bench_$variant"; mkdir -p "$dir"; : >"$dir/BUILD.toml"
    for i in $(seq 40); do
      deps='[]'; [ $variant = with ] && deps='["//envs:train"]'
      printf '[target.t%s]\ncmd = ["true", "%s-%s-%s"]\ndeps = %s\n\n' "$i" "$variant" "$i" "$1" "$deps" >>"$dir/BUILD.toml"
    done
  done
}
bench_round 1
"$MLBUILD" -C "$work/a" --store "$work/s1" build //bench_with:all //bench_without:all --no-remote >/dev/null 2>&1
# Alternating rounds, each with fresh argv so all 40 actions run again; medians.
: >"$work/with.ms"; : >"$work/without.ms"
for round in $(seq 2 8); do
  bench_round "$round"
  timed "$MLBUILD" -C "$work/a" --store "$work/s1" build //bench_with:all -j1 --no-remote >>"$work/with.ms"
  timed "$MLBUILD" -C "$work/a" --store "$work/s1" build //bench_without:all -j1 --no-remote >>"$work/without.ms"
done
with=$(sort -n "$work/with.ms" | sed -n 4p)
without=$(sort -n "$work/without.ms" | sed -n 4p)
echo "40 trivial actions, -j1, median of 7 alternating rounds: with the environment ${with} ms, without ${without} ms: $(( (with - without) * 1000 / 40 )) us per action"

"$MLBUILD" -C "$work/a" --store "$work/s1" build //... --no-remote >/dev/null 2>&1
runs=()
for _ in $(seq 11); do runs+=("$(timed "$MLBUILD" -C "$work/a" --store "$work/s1" build //... --no-remote)"); done
median=$(printf '%s\n' "${runs[@]}" | sort -n | sed -n 6p)
echo "no-op build of examples/sklearn (//..., 11 runs): median ${median} ms"
