#!/usr/bin/env python3
"""mlbuild against ninja on the same generated graph, run alternately.

`gen_workspace.py` writes the graph twice: as an mlbuild workspace and as a
build.ninja running the same shell commands on the same sources. Each
measurement runs mlbuild and ninja in turn (A B A B ...), so a machine whose
speed drifts during the run moves both alike, and the ratio is taken pair by
pair; the table gives the median of each side and the median of the pairwise
ratios (mlbuild / ninja).

  first build       everything from scratch: a fresh store and no mlbuild-out/
                    for mlbuild; no out/ and no .ninja_log for ninja (--first-runs)
  no-op build       nothing to do (--noop-runs, after 2 warm-up runs each)
  one-param change  bump the param of a target nothing depends on, rebuild
                    (--param-runs): one action each

Wall time is a monotonic clock around the process; CPU (user + system) and peak
RSS are the kernel's accounting of the finished child (`os.wait4`), so they
include mlbuild's sandbox processes and ninja's commands; peak RSS is the
largest single process (it cannot read below the ~15 MiB of the Python process
the child starts as, which is ninja's figure in small builds). mlbuild runs actions in its namespace sandbox (unless
MLBUILD_SANDBOX=plain), ninja runs them bare: the first-build difference is the
per-action cost of the sandbox and the bookkeeping around it.

Usage:
  vs_ninja.py --mlbuild BIN --targets 1000 --shape chain --work DIR [--jobs J]

Only the Python 3 standard library is used (and `ninja` on PATH).
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import gen_workspace  # noqa: E402


class Sample:
    def __init__(self, wall, cpu, rss_kib, output):
        self.wall, self.cpu, self.rss_kib, self.output = wall, cpu, rss_kib, output


def run(cmd, cwd=None):
    """Runs `cmd` to completion: wall seconds, CPU seconds, peak RSS (KiB), output."""
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL)
    out = p.stdout.read()
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.monotonic() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    text = out.decode(errors="replace")
    if p.returncode != 0:
        raise SystemExit(f"failed ({p.returncode}): {' '.join(cmd)}\n{text[-3000:]}")
    return Sample(wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss, text)


def summary_line(text):
    lines = [l for l in text.splitlines() if l.lower().startswith(("build succeeded", "build failed"))]
    return lines[-1] if lines else "?"


def executed(text):
    line = summary_line(text)
    for part in line.replace(",", " ").split(";"):
        words = part.split()
        for k, w in enumerate(words):
            if w == "executed" and k > 0 and words[k - 1].isdigit():
                return int(words[k - 1])
    return None


def ninja_ran(text):
    """How many commands ninja ran: the `[k/N]` progress lines."""
    return sum(1 for l in text.splitlines() if l.startswith("["))


def alternate(rounds, a, b):
    """Runs a() and b() alternately `rounds` times; returns both lists of samples."""
    sa, sb = [], []
    for _ in range(rounds):
        sa.append(a())
        sb.append(b())
    return sa, sb


def row(name, sa, sb):
    med = statistics.median
    wall_ratio = med(x.wall / y.wall for x, y in zip(sa, sb))
    cpu_ratio = med(x.cpu / max(y.cpu, 1e-6) for x, y in zip(sa, sb))
    ms = lambda v: f"{v * 1000:.1f} ms" if v < 1 else f"{v:.2f} s"
    return (f"| {name} | {len(sa)} | {ms(med(x.wall for x in sa))} | {ms(med(x.wall for x in sb))} "
            f"| **{wall_ratio:.2f}x** | {ms(med(x.cpu for x in sa))} | {ms(med(x.cpu for x in sb))} "
            f"| **{cpu_ratio:.2f}x** | {max(x.rss_kib for x in sa) // 1024} / {max(x.rss_kib for x in sb) // 1024} MiB |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mlbuild", required=True)
    ap.add_argument("--ninja-bin", default=shutil.which("ninja") or "ninja")
    ap.add_argument("--targets", type=int, default=1000)
    ap.add_argument("--shape", choices=["chain", "fanout", "mixed"], default="chain")
    ap.add_argument("--work", required=True, help="directory for the workspace, store and ninja tree")
    ap.add_argument("--jobs", type=int, default=os.cpu_count())
    ap.add_argument("--first-runs", type=int, default=1)
    ap.add_argument("--noop-runs", type=int, default=20)
    ap.add_argument("--param-runs", type=int, default=5)
    ap.add_argument("--sandbox-path", metavar="DIR:DIR")
    a = ap.parse_args()

    n, shape = a.targets, a.shape
    ws = os.path.join(a.work, f"vs-ws-{shape}-{n}")
    store = os.path.join(a.work, f"vs-store-{shape}-{n}")
    nj = os.path.join(a.work, f"vs-ninja-{shape}-{n}")
    for d in (ws, store, nj):
        shutil.rmtree(d, ignore_errors=True)
    packages = max(1, n // 100)
    gen_workspace.generate(ws, n, shape, packages, 10, 1, a.sandbox_path)
    gen_workspace.generate_ninja(nj, n, shape, packages, 10, 1)
    mlbuild = [a.mlbuild, "-C", ws, "--store", store, "build", "//...", "--jobs", str(a.jobs)]
    ninja = [a.ninja_bin, "-C", nj, "-j", str(a.jobs)]

    def mlbuild_first():
        shutil.rmtree(store, ignore_errors=True)
        shutil.rmtree(os.path.join(ws, "mlbuild-out"), ignore_errors=True)
        s = run(mlbuild)
        assert executed(s.output) == n, summary_line(s.output)
        return s

    def ninja_first():
        shutil.rmtree(os.path.join(nj, "out"), ignore_errors=True)
        for f in (".ninja_log", ".ninja_deps"):
            if os.path.exists(os.path.join(nj, f)):
                os.remove(os.path.join(nj, f))
        s = run(ninja)
        assert ninja_ran(s.output) == n, s.output[-500:]
        return s

    def mlbuild_noop():
        s = run(mlbuild)
        assert executed(s.output) == 0, summary_line(s.output)
        return s

    def ninja_noop():
        s = run(ninja)
        assert "no work to do" in s.output, s.output[-500:]
        return s

    leaf = gen_workspace.leaf_index(n, shape, 10)
    expected = 3 if shape == "fanout" else 1

    def mlbuild_param():
        gen_workspace.touch_param(ws, leaf)
        s = run(mlbuild)
        assert executed(s.output) == expected, summary_line(s.output)
        return s

    def ninja_param():
        gen_workspace.touch_param_ninja(nj, leaf)
        s = run(ninja)
        assert ninja_ran(s.output) == expected, s.output[-500:]
        return s

    print(f"== {shape} {n}: first build x{a.first_runs}", file=sys.stderr)
    first = alternate(a.first_runs, mlbuild_first, ninja_first)
    print(f"== {shape} {n}: no-op x{a.noop_runs}", file=sys.stderr)
    alternate(2, mlbuild_noop, ninja_noop)
    noop = alternate(a.noop_runs, mlbuild_noop, ninja_noop)
    print(f"== {shape} {n}: one-param change x{a.param_runs}", file=sys.stderr)
    param = alternate(a.param_runs, mlbuild_param, ninja_param)

    print(f"\nmlbuild vs ninja, {n} targets ({shape}), -j{a.jobs}, alternating runs; "
          f"ratio = median of the pairwise mlbuild/ninja ratios")
    print("| build | runs | mlbuild wall | ninja wall | wall ratio | mlbuild CPU | ninja CPU | CPU ratio | peak RSS mlbuild / ninja |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(row("first", *first))
    print(row("no-op", *noop))
    print(row("one-param change", *param))
    fa, fb = first
    per_action = (statistics.median(x.wall for x in fa) - statistics.median(x.wall for x in fb)) * a.jobs / n
    print(f"\nfirst build, mlbuild's extra wall time per action (x{a.jobs} jobs / {n}): {per_action * 1000:.1f} ms")


if __name__ == "__main__":
    main()
