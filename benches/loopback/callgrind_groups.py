#!/usr/bin/env python3
"""Groups a callgrind dump's instructions by what the code does, per request.

Usage: callgrind_groups.py DUMP REQUESTS [--files N] [--functions N]

Each instruction is counted once (exclusive cost) where it executes: in the source file of the
line it comes from — for code inlined into a caller, the inlined function's own file (callgrind's
`fi=`/`fe=` records), so an inlined header lookup counts as the codec's, not as its caller's;
but code of Rust's standard library inlined into a function (iterators, `Option`, slices)
counts as that function's file's. Lines without debug information count under their object
(libc, ...). The files
are then put into groups by the patterns in GROUPS (first match wins); `--files N` also prints
the N most expensive files and `--functions N` the N most expensive functions (exclusive), to
check the grouping. Standard library only (Python 3.8+).
"""
import argparse
import re
import sys
from collections import defaultdict

# (group, regex on "object|file"), first match wins. Files are as the binary's debug info
# names them: the workspace's relative to its crate (`runtime/src/...` etc. absolute), crates
# from the registry under `.cargo/registry/src/<index>/<crate>-<version>/`.
GROUPS = [
    ("codec: parse (core/src/http1 parse, httparse)", r"http1/(parse|reference|mod)\.rs|/httparse-"),
    ("codec: write (core/src/http1/write.rs)", r"http1/write\.rs"),
    ("codec: chunked / connection policy", r"http1/(chunked|conn)\.rs"),
    ("path normalization", r"core/src/path"),
    ("routing (core router, pattern)", r"core/src/(router|pattern)"),
    ("header edits (core l7/edits, runtime http/wire)", r"l7/edits\.rs|http/wire\.rs"),
    ("l7 stream (core l7 stream/exchange)", r"core/src/l7/"),
    ("balancer / cluster state (core upstream)", r"core/src/upstream"),
    ("runtime request path (http/stream, body, respond)", r"runtime/src/http/(stream|body|respond)\.rs"),
    ("runtime connection loop (http/mod.rs)", r"runtime/src/http/mod\.rs"),
    ("upstream connections, pool (http/upstream, pool, upstreams)", r"runtime/src/(http/upstream|pool|upstreams|bufpool)\.rs"),
    ("stats", r"runtime/src/stats\.rs"),
    ("access log, tracing", r"runtime/src/(access_log|otlp)\.rs|/tracing"),
    ("request id, rng (core rng, uuid)", r"core/src/rng\.rs|/uuid-|/rand"),
    ("clock (core time, runtime `now`, clock_gettime)", r"core/src/time\.rs|runtime/src/lib\.rs|vdso|clock_gettime|tokio-[^/]*/src/time/instant|std/src/time\.rs|/sys/pal/unix/time\.rs"),
    ("timers (tokio time)", r"/tokio-[^/]*/src/(time|runtime/time)/"),
    ("tokio IO driver (epoll, readiness)", r"/tokio-[^/]*/src/(io|net|runtime/io)/|/mio-"),
    ("drain notifications (tokio Notify)", r"/tokio-[^/]*/src/sync/notify\.rs"),
    ("tokio scheduler, tasks, wakers, select", r"/tokio-[^/]*/src/|/futures-|/pin-project"),
    ("other runtime (engine, worker, downstream, net)", r"(?<!library)/runtime/src/"),
    ("other core", r"(?<!library)/core/src/"),
    ("allocator (malloc, free)", r"malloc|libc\.so.*\|.*(alloc|free)|alloc/src/(alloc|raw_vec)"),
    ("memcpy, memmove, memset, memchr, memcmp", r"mem(cpy|move|set|chr|cmp)|/core/src/slice/memchr|/memchr-"),
    ("libc system call wrappers (send, recv, epoll_wait)", r"libc\.so|libpthread|/libc-"),
    ("Rust core/alloc/std (fmt, slices, iterators)", r"/rustc/|library/(core|alloc|std)/"),
    ("kernel (valgrind counts none) / other", r".*"),
]


STD = re.compile(r"^/rustc/|^library/")


def parse(path):
    """Exclusive Ir per (object, file) and per function name."""
    names = {}  # (kind, id) -> name

    def resolve(kind, value):
        m = re.match(r"\((\d+)\)(?: (.*))?$", value)
        if not m:
            return value
        key = (kind, m.group(1))
        if m.group(2) is not None:
            names[key] = m.group(2)
        return names.get(key, "?")

    by_file = defaultdict(int)
    by_fn = defaultdict(int)
    called = defaultdict(int)  # fn -> Ir of the calls it makes (inclusive cost of callees)
    total = 0
    ob = fl = fi = fn = cfn = ""
    skip_next_cost = False
    events = None
    with open(path, errors="replace") as f:
        for line in f:
            c = line[0]
            if c.isdigit() or c in "+-*":
                if skip_next_cost:
                    skip_next_cost = False
                    parts = line.split()
                    if len(parts) >= 2 and cfn != fn:
                        called[fn] += int(parts[1])
                    continue
                parts = line.split()
                if len(parts) < 2:
                    continue
                ir = int(parts[1])
                total += ir
                src = fl if not fi or STD.search(fi) else fi
                by_file[(ob, src)] += ir
                by_fn[(ob, fn)] += ir
                continue
            if line.startswith("ob="):
                ob = resolve("ob", line[3:].strip())
            elif line.startswith("fl="):
                fl = resolve("fl", line[3:].strip())
                fi = ""
            elif line.startswith(("fi=", "fe=")):
                fi = resolve("fl", line[3:].strip())
            elif line.startswith("fn="):
                fn = resolve("fn", line[3:].strip())
                fi = ""
            elif line.startswith("cob="):
                resolve("ob", line[4:].strip())
            elif line.startswith(("cfl=", "cfi=")):
                resolve("fl", line[4:].strip())
            elif line.startswith("cfn="):
                cfn = resolve("fn", line[4:].strip())
            elif line.startswith("calls="):
                skip_next_cost = True
            elif line.startswith("events:"):
                events = line.split()[1:]
    if events and events[0] != "Ir":
        sys.exit(f"{path}: first event is {events[0]}, expected Ir")
    return total, by_file, by_fn, called


def group_of(ob, src):
    key = f"{ob}|{src}"
    for name, pat in GROUPS:
        if re.search(pat, key):
            return name
    return GROUPS[-1][0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dump")
    ap.add_argument("requests", type=int)
    ap.add_argument("--files", type=int, default=0)
    ap.add_argument("--functions", type=int, default=0)
    ap.add_argument("--inclusive", action="append", default=[], metavar="REGEX",
                    help="also print the inclusive and exclusive cost of the functions whose "
                    "name matches (repeatable)")
    a = ap.parse_args()
    total, by_file, by_fn, called = parse(a.dump)
    groups = defaultdict(int)
    for (ob, src), ir in by_file.items():
        groups[group_of(ob, src)] += ir
    n = a.requests
    print(f"total: {total:,} instructions, {total / n:,.0f} per request ({n} requests)\n")
    print("| group | instructions per request | share |")
    print("|---|---:|---:|")
    for name, ir in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"| {name} | {ir / n:,.0f} | {100 * ir / total:.1f} % |")
    if a.inclusive:
        print("\n| function | inclusive per request | exclusive per request |\n|---|---:|---:|")
        excl = defaultdict(int)
        for (_, fn), ir in by_fn.items():
            excl[fn] += ir
        for pat in a.inclusive:
            for fn in sorted(f for f in excl if re.search(pat, f)):
                inc = excl[fn] + called.get(fn, 0)
                print(f"| `{fn[:120]}` | {inc / n:,.0f} | {excl[fn] / n:,.0f} |")
    if a.files:
        print(f"\n| file (object) | per request | group |\n|---|---:|---|")
        for (ob, src), ir in sorted(by_file.items(), key=lambda kv: -kv[1])[: a.files]:
            short = re.sub(r".*/registry/src/[^/]*/", "", src)
            short = re.sub(r"^/rustc/[0-9a-f]+/", "", short)
            print(f"| {short} ({ob.rsplit('/', 1)[-1]}) | {ir / n:,.0f} | {group_of(ob, src)} |")
    if a.functions:
        print(f"\n| function (exclusive, inlined code included) | per request |\n|---|---:|")
        for (ob, fn), ir in sorted(by_fn.items(), key=lambda kv: -kv[1])[: a.functions]:
            print(f"| `{fn[:140]}` | {ir / n:,.0f} |")


if __name__ == "__main__":
    main()
