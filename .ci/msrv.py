"""Fails when a locked dependency needs a newer Rust than the workspace's `rust-version`.

Reads `cargo metadata --format-version 1 --locked` on stdin (see .ci/run).
"""
import json
import sys


def version(text):
    parts = [int(part) for part in text.split(".")[:3]]
    return tuple(parts + [0] * (3 - len(parts)))


meta = json.load(sys.stdin)
ours = {p["rust_version"] for p in meta["packages"] if p["source"] is None and p["rust_version"]}
if len(ours) != 1:
    sys.exit(f"error: the workspace crates declare different rust-versions: {sorted(ours)}")
msrv = ours.pop()
newer = [
    f"{p['name']} {p['version']} needs Rust {p['rust_version']}"
    for p in meta["packages"]
    if p["source"] and p.get("rust_version") and version(p["rust_version"]) > version(msrv)
]
if newer:
    sys.exit(f'error: rust-version = "{msrv}" in Cargo.toml, but ' + "; ".join(newer))
print(f"rust-version {msrv}: every locked dependency builds with it")
