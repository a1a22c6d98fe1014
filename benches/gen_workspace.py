#!/usr/bin/env python3
"""Generate a synthetic mlbuild workspace for benchmarking.

Every target `tI` has one small literal source file `tI.txt` in its package and
a trivial sandboxed command that copies it (plus its deps' outputs) into
`{out}/o.txt`. Target names are unique across the workspace so `{deps.tJ}`
is unambiguous.

Shapes:
  chain   chains of --chain-len (default 10) targets; each depends on the
          previous one in its chain. Many independent chains run in parallel.
  fanout  t0 is a root; leaves depend only on t0; aggregators each depend on
          up to 100 leaves; the last target depends on every aggregator.
  mixed   a chain backbone (as in `chain`) plus up to 2 extra deps on random
          earlier targets (seeded, so reproducible); at most 3 deps each.

The same graph can be written for ninja (--ninja DIR): one `build` statement per
target with the same shell command, reading the same sources, writing
`out/<pkg>/tI/o.txt`; the param is part of the command line (`echo v=N`), so
ninja reruns a target whose param changed, as mlbuild does.

Usage:
  gen_workspace.py --targets 1000 --shape chain --out DIR [--packages P]
  gen_workspace.py --targets 1000 --shape chain --ninja DIR      # the same graph for ninja
  gen_workspace.py --touch-param I --out DIR     # bump target tI's `v` param
  gen_workspace.py --leaf-index --targets N --shape S   # print a target index
        whose param change re-executes few actions (for the rebuild benchmark)

Only the Python 3 standard library is used.
"""

import argparse
import os
import random
import re
import sys

AGG_FANIN = 100  # max deps of a fanout aggregator


def plan_deps(n, shape, chain_len, seed):
    """Return a list `deps` where deps[i] is the list of dep indexes of target i."""
    deps = [[] for _ in range(n)]
    if shape == "chain":
        for i in range(n):
            if i % chain_len != 0:
                deps[i].append(i - 1)
    elif shape == "fanout":
        if n < 3:
            for i in range(1, n):
                deps[i].append(0)
            return deps
        # n = 1 root + L leaves + A aggregators + 1 final, A = ceil(L / 100)
        leaves = n - 2
        while leaves + (leaves + AGG_FANIN - 1) // AGG_FANIN + 2 > n:
            leaves -= 1
        aggs = n - 2 - leaves
        first_leaf, first_agg, final = 1, 1 + leaves, n - 1
        for i in range(first_leaf, first_agg):
            deps[i].append(0)
        for a in range(aggs):
            lo = first_leaf + a * AGG_FANIN
            hi = min(first_agg, lo + AGG_FANIN)
            # the last aggregator(s) may get no leaves if the rounding leaves extras
            deps[first_agg + a] = list(range(lo, hi)) if lo < hi else [0]
        deps[final] = list(range(first_agg, final))
        if len(deps[final]) > AGG_FANIN:
            raise SystemExit("fanout: too many aggregators; use fewer targets")
    elif shape == "mixed":
        rng = random.Random(seed)
        for i in range(n):
            d = []
            if i % chain_len != 0:
                d.append(i - 1)
            extra = rng.randint(0, 2)
            for _ in range(extra):
                if i < 2:
                    break
                j = rng.randrange(0, i - 1)
                if j not in d:
                    d.append(j)
            deps[i] = sorted(d)
    else:
        raise SystemExit(f"unknown shape {shape!r}")
    return deps


def package_of(i, n, packages):
    return f"p{(i * packages) // n:04d}"


def toml_str(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def generate(out, n, shape, packages, chain_len, seed, sandbox_path=None):
    if n < 1:
        raise SystemExit("--targets must be >= 1")
    packages = max(1, min(packages, n))
    deps = plan_deps(n, shape, chain_len, seed)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "MLBUILD.toml"), "w") as f:
        f.write(f'[workspace]\nname = "bench-{shape}-{n}"\n')
        if sandbox_path:
            dirs = ", ".join(toml_str(d) for d in sandbox_path.split(":") if d)
            f.write(f"\n[sandbox]\npath = [{dirs}]\n")
    # mixed graphs are DAGs with diamonds: `cat`-ing whole dep outputs would grow
    # exponentially, so they append only the head of each dep's output.
    append = "head -n 8" if shape == "mixed" else "cat"
    by_pkg = {}
    for i in range(n):
        by_pkg.setdefault(package_of(i, n, packages), []).append(i)
    for pkg, idxs in by_pkg.items():
        pdir = os.path.join(out, pkg)
        os.makedirs(pdir, exist_ok=True)
        lines = []
        for i in idxs:
            name = f"t{i}"
            with open(os.path.join(pdir, f"{name}.txt"), "w") as f:
                f.write(f"source of {name}\n")
            script = f"cat {name}.txt > {{out}}/o.txt && echo v={{params.v}} >> {{out}}/o.txt"
            for j in deps[i]:
                script += f" && {append} {{deps.t{j}}}/o.txt >> {{out}}/o.txt"
            dep_labels = [f"//{package_of(j, n, packages)}:t{j}" for j in deps[i]]
            lines.append(f"[target.{name}]")
            lines.append(f"srcs = [{toml_str(name + '.txt')}]")
            if dep_labels:
                lines.append("deps = [" + ", ".join(toml_str(d) for d in dep_labels) + "]")
            lines.append(f'cmd = ["sh", "-c", {toml_str(script)}]')
            lines.append('outs = ["o.txt"]')
            lines.append("params = { v = 1 }")
            lines.append("")
        with open(os.path.join(pdir, "BUILD.toml"), "w") as f:
            f.write("\n".join(lines))
    ndeps = sum(len(d) for d in deps)
    print(f"generated {n} targets ({shape}, {len(by_pkg)} packages, {ndeps} dep edges) in {out}",
          file=sys.stderr)


def generate_ninja(out, n, shape, packages, chain_len, seed):
    """The graph of `generate` as a build.ninja in `out`, with the same sources and
    commands; paths are relative to `out`, where ninja runs."""
    if n < 1:
        raise SystemExit("--targets must be >= 1")
    packages = max(1, min(packages, n))
    deps = plan_deps(n, shape, chain_len, seed)
    append = "head -n 8" if shape == "mixed" else "cat"
    os.makedirs(out, exist_ok=True)
    lines = ["rule sh", "  command = $cmd", "  description = $out", ""]
    for i in range(n):
        pkg = package_of(i, n, packages)
        os.makedirs(os.path.join(out, pkg), exist_ok=True)
        with open(os.path.join(out, pkg, f"t{i}.txt"), "w") as f:
            f.write(f"source of t{i}\n")
        o = f"out/{pkg}/t{i}/o.txt"
        dep_outs = [f"out/{package_of(j, n, packages)}/t{j}/o.txt" for j in deps[i]]
        script = f"cat {pkg}/t{i}.txt > {o} && echo v=1 >> {o}"
        for d in dep_outs:
            script += f" && {append} {d} >> {o}"
        lines.append(f"build {o}: sh {pkg}/t{i}.txt" + "".join(" " + d for d in dep_outs))
        lines.append(f"  cmd = {script}")
    lines.append("")
    with open(os.path.join(out, "build.ninja"), "w") as f:
        f.write("\n".join(lines))
    print(f"generated build.ninja with {n} targets ({shape}) in {out}", file=sys.stderr)


NINJA_V_RE = re.compile(r"echo v=(\d+) >>")


def touch_param_ninja(out, index):
    """Increment `v` in the command of target t<index> of `out/build.ninja`."""
    path = os.path.join(out, "build.ninja")
    with open(path) as f:
        lines = f.read().split("\n")
    suffix = f"/t{index}/o.txt:"
    for k, line in enumerate(lines):
        if line.startswith("build ") and line.split(" ")[1].endswith(suffix):
            m = NINJA_V_RE.search(lines[k + 1])
            new = int(m.group(1)) + 1
            lines[k + 1] = NINJA_V_RE.sub(f"echo v={new} >>", lines[k + 1])
            tmp = path + ".tmp"
            with open(tmp, "w") as f:
                f.write("\n".join(lines))
            os.replace(tmp, path)
            return new
    raise SystemExit(f"target t{index} not found in {path}")


PARAM_RE = re.compile(r"^params = \{ v = (\d+) \}$", re.M)


def touch_param(out, index):
    """Increment `v` in target t<index>'s params; returns the new value."""
    if os.path.exists(os.path.join(out, "build.ninja")):
        return touch_param_ninja(out, index)
    header = f"[target.t{index}]\n"
    for root, _dirs, files in os.walk(out):
        if "BUILD.toml" not in files:
            continue
        path = os.path.join(root, "BUILD.toml")
        with open(path) as f:
            text = f.read()
        start = text.find(header)
        if start < 0:
            continue
        m = PARAM_RE.search(text, start)
        if not m:
            raise SystemExit(f"no params line for t{index} in {path}")
        new = int(m.group(1)) + 1
        text = text[: m.start()] + f"params = {{ v = {new} }}" + text[m.end():]
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
        return new
    raise SystemExit(f"target t{index} not found under {out}")


def leaf_index(n, shape, chain_len):
    """A target whose change re-executes few actions: the end of the first chain
    (1 action) for chain/mixed-ish shapes, a leaf (leaf + its aggregator + final
    = 3 actions) for fanout."""
    if shape == "fanout":
        return 1 if n >= 3 else n - 1
    if shape == "mixed":
        return n - 1  # the last target: nothing depends on it
    return min(chain_len, n) - 1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", type=int, default=1000)
    ap.add_argument("--shape", choices=["chain", "fanout", "mixed"], default="chain")
    ap.add_argument("--packages", type=int, default=None, help="default: targets/100 (at least 1)")
    ap.add_argument("--chain-len", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--sandbox-path", metavar="DIR:DIR",
                    help="write [sandbox] path = [...] into MLBUILD.toml (default: mlbuild's default)")
    ap.add_argument("--out", help="workspace directory to create (or to touch)")
    ap.add_argument("--ninja", metavar="DIR",
                    help="write the same graph as DIR/build.ninja (touch it with --touch-param I --out DIR)")
    ap.add_argument("--touch-param", type=int, metavar="TARGET_INDEX",
                    help="bump params.v of target tTARGET_INDEX in the workspace at --out")
    ap.add_argument("--leaf-index", action="store_true",
                    help="print a good target index for --touch-param and exit")
    a = ap.parse_args()
    if a.leaf_index:
        print(leaf_index(a.targets, a.shape, a.chain_len))
        return
    packages = a.packages if a.packages is not None else max(1, a.targets // 100)
    if a.ninja:
        generate_ninja(a.ninja, a.targets, a.shape, packages, a.chain_len, a.seed)
        if not a.out:
            return
    if not a.out:
        ap.error("--out is required")
    if a.touch_param is not None:
        new = touch_param(a.out, a.touch_param)
        print(f"t{a.touch_param}: params.v = {new}", file=sys.stderr)
        return
    generate(a.out, a.targets, a.shape, packages, a.chain_len, a.seed, a.sandbox_path)


if __name__ == "__main__":
    main()
