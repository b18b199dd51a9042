#!/usr/bin/env python3
"""Loopback benchmark: Sluice side by side with nginx and HAProxy, as L4 (TCP) and L7 (HTTP/1.1)
proxies: Sluice tcp_proxy vs nginx stream vs HAProxy mode tcp, and Sluice's http listener vs nginx
http proxy_pass vs HAProxy mode http; and (--mode bolt) Sluice's Bolt (SOFARPC) proxy vs direct.

Method (DESIGN.md, "Measuring performance"): the backend and the load generator share core 0,
the proxy under test runs alone on core 1 with one worker, and the figure that counts is work
done per proxy CPU-second, read from /proc/PID/stat (utime+stime) before and after the load.
All proxies run in the same invocation against the same backend with the same load.

Tests, per proxy (--mode tcp runs http + bulk, --mode http runs l7, --mode all, the default, both):
  http  (L4) wrk -t1 -c<conns> -d<secs> --latency, keep-alive, through the L4 proxy to a separate
        nginx backend (`return 200 "hello\\n"`). Reports req/s, p50/p99, proxy CPU-s and
        requests per proxy CPU-second.
  bulk  (L4) one iperf3 stream (control + data connection) through the proxy to `iperf3 -s`.
        Reports Gbit/s, proxy CPU-s and Gbit per proxy CPU-second.
  l7    (L7) the same wrk load (plus -H 'Host: bench.local') through an HTTP/1.1 proxy that parses
        every request and response and keeps its upstream connections alive (a separate proxy
        instance with its own config). Same figures as http.
  tls_*  (--mode tls only, not part of all) TLS termination in front of an L4 relay
        to the same backend: Sluice tcp_proxy with `tls:` vs nginx stream `listen ssl` vs HAProxy
        `bind ssl` (mode tcp), one ECDSA P-256 certificate made with openssl for the run.
        wrk -H 'Connection: close' over https makes a new connection per request, and wrk
        offers the previous connection's session (OpenSSL's SSL_clear keeps it), so:
        tls_full: listeners with resumption off (no tickets, no session cache) on every proxy:
        each request a full TLS 1.3 handshake (X25519), in handshakes per proxy CPU-second;
        tls_full12: the same held to TLS 1.2; tls_full_p256: TLS 1.3 with P-256 only;
        tls_resumed: the proxies' default listeners (tickets and cache on): resumed handshakes;
        tls_ka: keep-alive over https on the default listeners: requests per proxy CPU-second;
        tls_full_l7, tls_ka_l7: the same two loads through an HTTP/1.1 proxy behind TLS
        (resumption off) that keeps its upstream connections alive (Sluice `http` listener,
        nginx `http` `listen ssl` with an upstream `keepalive`, HAProxy `mode http`).
        Before measuring, each listener is probed with openssl s_client -sess_out/-sess_in:
        a full-handshake listener that resumes, or a default one that does not, fails the run.
        What each proxy negotiated (version, cipher, key exchange group) is probed with
        `openssl s_client` and shown.
  bolt  (--mode bolt only, not part of all; Sluice only: nginx and HAProxy do not speak Bolt)
        `bolt-load load` (C connections x P pipelined Bolt v1 requests, 64-byte content) through
        Sluice's bolt listener to `bolt-load serve` (an echo server). Reports req/s, p50/p99,
        proxy CPU-s, requests per proxy CPU-second and errors (any error fails the run).
  transparent  (--mode transparent only, root; Sluice only) wrk in an application network
        namespace against an nginx in a server namespace (a veth pair): HTTP captured by
        iptables REDIRECT (`sluice iptables` rules; hand-off to an HTTP listener routing to an
        `original_dst` cluster) vs the same Sluice as an explicit proxy (127.0.0.1, a static
        cluster). Reports requests per Sluice CPU-second of each, and captured / explicit per
        run and the median over --repeat runs (paths alternate order); <out>/transparent.md.
A "direct (no proxy)" row shows what the load generator reaches without a proxy.

Extra proxies (--mode http only): `--extra NAME=CMD` (repeatable) runs CMD as one more L7 proxy
in the same run, pinned and measured like the others; `{port}` in CMD is replaced by the port
it must listen on (127.0.0.1) and `{upstream}` by the backend's address (127.0.0.1:PORT). The
report gives its row, its ratios to Sluice, and the ratio of each later extra to each earlier
one (issue 15's io_uring experiment: benches/uring-exp/README.md).

Usage (from the repository root):
  python3 benches/loopback/harness.py                       # full run, 10 s per test
  python3 benches/loopback/harness.py --smoke               # 2 s, 10 connections (CI)
  python3 benches/loopback/harness.py --mode http           # L7 only (tcp: L4 only)
  python3 benches/loopback/harness.py --only nginx,haproxy  # without Sluice
  python3 benches/loopback/harness.py --repeat 3 --sluice target/release/sluice
  python3 benches/loopback/harness.py --mode tls --repeat 3  # TLS termination: handshakes, HTTPS
  python3 benches/loopback/harness.py --mode bolt --smoke   # Bolt: Sluice vs direct, 2 s
  python3 benches/loopback/harness.py --mode bolt --repeat 3 --connections 32 --pipeline 8
  python3 benches/loopback/harness.py --mode transparent --smoke  # root: capture vs explicit
  python3 benches/loopback/harness.py --mode transparent --repeat 3  # medians of 3 runs
  python3 benches/loopback/harness.py --mode http --only sluice \
      --extra 'epoll=uring-exp --driver epoll --listen 127.0.0.1:{port} --upstream {upstream}' \
      --extra 'uring=uring-exp --driver uring --listen 127.0.0.1:{port} --upstream {upstream}'

Needs: python3 (stdlib only), taskset, nginx (for L4 with the stream module; Debian: nginx +
libnginx-mod-stream), haproxy, wrk, iperf3 (L4 only), at least 2 CPUs; --mode bolt needs only
taskset, Sluice and target/release/bolt-load (cargo build --release -p sluice-runtime -p
sluice-benches). Everything listens on 127.0.0.1 high
ports only; every child runs in its own process group and is killed at the end, even on error.
Output: markdown table on stdout and <out>/results.md, raw figures in <out>/results.json, configs
and logs under <out>/work/.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
TEMPLATES = HERE / "templates"
CLK_TCK = os.sysconf("SC_CLK_TCK")

LOADGEN_CPU = "0"  # backend + wrk/iperf3
PROXY_CPU = "1"  # proxy under test

PROXIES = ("sluice", "nginx", "haproxy")
LABEL = {
    "direct": "direct (no proxy)",
    "sluice": "Sluice",
    "nginx": "nginx (stream)",
    "haproxy": "HAProxy (tcp)",
}
LABEL_TLS = {
    "direct": "direct (no proxy)",
    "sluice": "Sluice (tcp_proxy, rustls)",
    "nginx": "nginx (stream ssl, OpenSSL)",
    "haproxy": "HAProxy (tcp, OpenSSL)",
}
LABEL_TLS_L7 = {
    "direct": "direct (no proxy)",
    "sluice": "Sluice (http, rustls)",
    "nginx": "nginx (http ssl, OpenSSL)",
    "haproxy": "HAProxy (http, OpenSSL)",
}
LABEL_L7 = {
    "direct": "direct (no proxy)",
    "sluice": "Sluice (http)",
    "nginx": "nginx (http)",
    "haproxy": "HAProxy (http)",
}
SHORT = {"sluice": "Sluice", "nginx": "nginx", "haproxy": "HAProxy"}
MODES = ("tcp", "http")  # L4, L7 (what --mode all runs; bolt is separate: Sluice only)
MODE_TESTS = {"tcp": ("http", "bulk"), "http": ("l7",), "bolt": ("bolt",),
              "tls": ("tls_full", "tls_full12", "tls_full_p256", "tls_resumed", "tls_ka",
                      "tls_full_l7", "tls_ka_l7")}
# TLS tests: whether the listener it runs on resumes sessions (checked before measuring).
TLS_RESUMES = {"tls_full": False, "tls_full12": False, "tls_full_p256": False,
               "tls_resumed": True, "tls_ka": True, "tls_full_l7": False, "tls_ka_l7": False}
TLS_TESTS = tuple(TLS_RESUMES)
MODE_DIR_SUFFIX = {"tcp": "", "http": "-l7", "bolt": "-bolt", "tls": "-tls"}  # work/<proxy><suffix>
DIRECT_PORT = {"http": "backend", "l7": "backend", "bulk": "iperf", "bolt": "bolt_echo"}
BOLT_SERVICE = "com.example.EchoService:1.0"  # the one route of templates/sluice-bolt.yaml
# Context only (another machine, another load generator): MOSN 0.1.0's published Bolt figure.
MOSN_BOLT_NOTE = ("MOSN 0.1.0 reported about 103k QPS for Bolt on one dedicated core of a 2018 "
                  "Xeon; that figure comes from a different machine and load generator, so it is "
                  "context, not a measured comparison.")
L7_HOST = "bench.local"  # Host header of the L7 load (matches the `*` virtual host)
STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")
PORT_BASES = tuple(range(18740, 19941, 100))  # tried in order until all needed ports are free
START_TIMEOUT = 10.0  # seconds a listener gets to come up
STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL


def label(who: str, test: str) -> str:
    if test.startswith("tls"):
        return (LABEL_TLS_L7 if test.endswith("_l7") else LABEL_TLS)[who]
    return (LABEL_L7 if test == "l7" else LABEL)[who]


class HarnessError(Exception):
    pass


class Interrupted(BaseException):
    pass


def _on_signal(signum, _frame):
    raise Interrupted(f"received signal {signum}")


# --------------------------------------------------------------------------------------------
# Processes


class Procs:
    """Every child of the harness, each in its own session/process group."""

    def __init__(self, nice: int = 0):
        self.nice = nice
        self.live: list[tuple[str, subprocess.Popen, object]] = []

    def start(self, name: str, argv: list[str], log_path: Path, cpu: str | None = None,
              stdout_to_log: bool = True) -> subprocess.Popen:
        if cpu is not None:
            argv = ["taskset", "-c", cpu, *argv]
        if self.nice:
            argv = ["nice", "-n", str(self.nice), *argv]
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(log_path, "ab")
        log.write(f"# {_now()} $ {shlex.join(argv)}\n".encode())
        log.flush()
        try:
            p = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log if stdout_to_log else subprocess.PIPE,
                stderr=log,
                start_new_session=True,
            )
        except OSError:
            log.close()
            raise
        self.live.append((name, p, log))
        return p

    def run(self, name: str, argv: list[str], log_path: Path, timeout: float,
            cpu: str | None = None) -> str:
        """Run to completion (bounded); returns stdout, stderr goes to the log."""
        p = self.start(name, argv, log_path, cpu=cpu, stdout_to_log=False)
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop(p)
            raise HarnessError(f"{name} did not finish within {timeout:.0f} s (killed); "
                               f"see {log_path}")
        finally:
            if p.poll() is None:
                self.stop(p)
            self._forget(p)
        text = out.decode(errors="replace")
        with open(log_path, "a") as f:
            f.write(text)
            f.write(f"# exit status {p.returncode}\n")
        if p.returncode != 0:
            raise HarnessError(f"{name} exited with status {p.returncode}; see {log_path}\n"
                               + _tail(log_path))
        return text

    def stop(self, p: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
        if p.poll() is None:
            _killpg(p.pid, sig)
            try:
                p.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                _killpg(p.pid, signal.SIGKILL)
                try:
                    p.wait(STOP_GRACE)
                except subprocess.TimeoutExpired:
                    pass
        # Leftovers of the group (e.g. nginx workers whose master died first).
        _killpg(p.pid, signal.SIGKILL)
        self._forget(p)

    def _forget(self, p: subprocess.Popen) -> None:
        for i, (_, q, log) in enumerate(self.live):
            if q is p:
                try:
                    log.close()
                except OSError:
                    pass
                del self.live[i]
                return

    def stop_all(self) -> None:
        for _, p, _ in reversed(list(self.live)):
            try:
                self.stop(p)
            except Exception as e:  # keep killing the rest
                print(f"warning: stopping pid {p.pid}: {e}", file=sys.stderr)


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return "\n".join("    | " + line for line in text)


def _loadavg() -> list[float]:
    """1, 5 and 15-minute load averages."""
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except (OSError, ValueError):
        return [float("nan")] * 3


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------------------------
# /proc helpers


def _read_stat(pid: int) -> tuple[int, int] | None:
    """(ppid, utime+stime+cutime+cstime in clock ticks) of a process, or None if it is gone.

    utime+stime cover all threads of the process, including exited ones. cutime+cstime add the
    children it has reaped, so work done by a short-lived child between the two readings (e.g.
    a proxy that forks per connection) is not lost; a child alive at the first reading moves its
    ticks into its parent's cutime when reaped, so nothing is counted twice."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rindex(")") + 2:].split()  # comm may contain spaces/parens
    # rest[0] = state (field 3), rest[1] = ppid (4), rest[11..14] = utime, stime, cutime,
    # cstime (fields 14..17)
    return int(rest[1]), sum(int(x) for x in rest[11:15])


def process_tree(root: int) -> list[int]:
    """root and all its descendants (via the ppid field of /proc/*/stat)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _read_stat(int(entry))
            if st is not None:
                children.setdefault(st[0], []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def tree_cpu_ticks(root: int) -> tuple[int, list[int]]:
    pids = process_tree(root)
    total = 0
    for pid in pids:
        st = _read_stat(pid)
        if st is not None:
            total += st[1]
    return total, pids


def cpus_allowed(pids: list[int]) -> list[str]:
    """Distinct Cpus_allowed_list values over every thread of the given processes."""
    seen = set()
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/status") as f:
                    for line in f:
                        if line.startswith("Cpus_allowed_list:"):
                            seen.add(line.split(":", 1)[1].strip())
            except OSError:
                pass
    return sorted(seen)


def read_cpu_times() -> dict[str, tuple[int, int, int]]:
    """Per-core (busy, irq+softirq, total) jiffies from /proc/stat."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                name, *vals = line.split()
                v = [int(x) for x in vals[:8]]  # user nice system idle iowait irq softirq steal
                idle = v[3] + v[4]
                out[name] = (sum(v) - idle, v[5] + v[6], sum(v))
    return out


def core_busy(before, after, core: str, field: int = 0) -> float | None:
    """Percent of the interval core `core` spent busy (field 0) or in irq+softirq (field 1)."""
    key = f"cpu{core}"
    if key not in before or key not in after:
        return None
    part = after[key][field] - before[key][field]
    total = after[key][2] - before[key][2]
    return 100.0 * part / total if total > 0 else None


def listening_ports() -> set[int]:
    ports = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if parts[3] == "0A":  # TCP_LISTEN
                        ports.add(int(parts[1].rsplit(":", 1)[1], 16))
        except OSError:
            pass
    return ports


def port_free(port: int) -> bool:
    if port in listening_ports():
        return False
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def wait_listening(port: int, proc: subprocess.Popen, name: str, log_path: Path) -> None:
    """Wait until something listens on the port (checked in /proc/net/tcp*, without
    connecting, so that no probe connection disturbs e.g. iperf3)."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if proc.poll() is not None:
            raise HarnessError(f"{name} exited with status {proc.returncode} before listening on "
                               f"127.0.0.1:{port}; see {log_path}\n{_tail(log_path)}")
        if port in listening_ports():
            return
        if time.monotonic() > deadline:
            raise HarnessError(f"{name} is not listening on 127.0.0.1:{port} after "
                               f"{START_TIMEOUT:.0f} s; see {log_path}\n{_tail(log_path)}")
        time.sleep(0.05)


_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def backend_accepts(port: int) -> int | None:
    """Connections the backend nginx has accepted so far (its stub_status "accepts" counter,
    served on a separate port); each call itself adds one. None if unavailable."""
    try:
        with _NO_PROXY_OPENER.open(f"http://127.0.0.1:{port}/", timeout=5) as r:
            text = r.read().decode(errors="replace")
    except Exception:
        return None
    m = re.search(r"^\s*(\d+)\s+(\d+)\s+(\d+)\s*$", text, re.M)  # accepts handled requests
    return int(m.group(1)) if m else None


def http_get_ok(port: int, name: str, log_path: Path) -> None:
    """One request through the listener, so a proxy that accepts but does not forward fails fast."""
    try:
        with _NO_PROXY_OPENER.open(f"http://127.0.0.1:{port}/", timeout=5) as r:
            body = r.read()
            status = r.status
    except Exception as e:
        raise HarnessError(f"GET http://127.0.0.1:{port}/ through {name} failed: {e}; "
                           f"see {log_path}\n{_tail(log_path)}") from None
    if status != 200 or not body.startswith(b"hello"):
        raise HarnessError(f"GET through {name}: unexpected status {status} body {body[:60]!r}")


# --------------------------------------------------------------------------------------------
# Configs


def render(template: str, dest: Path, **values) -> Path:
    text = (TEMPLATES / template).read_text()
    for key, val in values.items():
        text = text.replace("{{" + key + "}}", str(val))
    left = re.findall(r"\{\{[A-Z_]+\}\}", text)
    if left:
        raise HarnessError(f"template {template}: unfilled placeholders {sorted(set(left))}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(text)
    return dest


def nginx_load_module_line() -> str:
    v = subprocess.run(["nginx", "-V"], capture_output=True, text=True, timeout=10)
    info = v.stdout + v.stderr
    if re.search(r"--with-stream(\s|$)", info):
        return "# stream module built in"
    if STREAM_MODULE.exists():
        return f"load_module {STREAM_MODULE};"
    raise HarnessError(
        f"nginx has no stream module ({STREAM_MODULE} missing). On Debian/Ubuntu install it with:\n"
        "    apt-get install -y libnginx-mod-stream")


# --------------------------------------------------------------------------------------------
# Load generators

_UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def parse_wrk(text: str) -> dict:
    def num(pattern):
        m = re.search(pattern, text, re.M)
        return m

    m = num(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)")
    rps = num(r"^Requests/sec:\s+([\d.]+)")
    if not m or not rps:
        raise HarnessError("could not parse wrk output:\n" + text)
    out = {
        "requests": int(m.group(1)),
        "wrk_seconds": float(m.group(2)) * _UNIT_MS[m.group(3)] / 1e3,
        "rps": float(rps.group(1)),
    }
    for pct in ("50", "75", "90", "99"):
        p = num(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s|m|h)\s*$")
        out[f"p{pct}_ms"] = float(p.group(1)) * _UNIT_MS[p.group(2)] if p else None
    se = num(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
    out["socket_errors"] = (dict(zip(("connect", "read", "write", "timeout"),
                                     map(int, se.groups()))) if se else {})
    n2 = num(r"Non-2xx or 3xx responses: (\d+)")
    out["non_2xx"] = int(n2.group(1)) if n2 else 0
    return out


# The environment of the TLS clients (wrk over https, the openssl s_client probes): with
# --tls-client-suites, an OpenSSL config that makes them offer only those suites, so that every
# proxy negotiates the same one whatever its own preference (the servers are not touched).
TLS_CLIENT_ENV: dict[str, str] = {}


def write_client_suites_conf(suites: str, path: Path) -> None:
    """An OpenSSL config whose default TLS client offers only `suites` (comma-separated: IANA
    TLS 1.3 names go to Ciphersuites, OpenSSL TLS 1.2 names to CipherString)."""
    names = [n.strip() for n in suites.split(",") if n.strip()]
    tls13 = [n for n in names if n.startswith("TLS_")]
    tls12 = [n for n in names if not n.startswith("TLS_")]
    lines = ["openssl_conf = default_conf", "[default_conf]", "ssl_conf = ssl_sect",
             "[ssl_sect]", "system_default = system_default_sect", "[system_default_sect]"]
    if tls13:
        lines.append("Ciphersuites = " + ":".join(tls13))
    if tls12:
        lines.append("CipherString = " + ":".join(tls12))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    TLS_CLIENT_ENV["OPENSSL_CONF"] = str(path)


def wrk_argv(port: int, conns: int, secs: int, host: str | None = None,
             https: bool = False, close: bool = False) -> list[str]:
    extra = ["-H", f"Host: {host}"] if host else []
    if close:
        extra += ["-H", "Connection: close"]
    scheme = "https" if https else "http"
    env = [f"{k}={v}" for k, v in TLS_CLIENT_ENV.items()] if https else []
    return [*(["env", *env] if env else []), "wrk", "-t1", f"-c{conns}", f"-d{secs}s",
            "--latency", *extra, f"{scheme}://127.0.0.1:{port}/"]


def _client_env() -> dict[str, str] | None:
    return {**os.environ, **TLS_CLIENT_ENV} if TLS_CLIENT_ENV else None


def https_get_ok(port: int, name: str, log_path: Path) -> None:
    """One request over TLS through the listener (certificate not verified: it is the run's own
    self-signed one)."""
    import ssl
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                ctx.wrap_socket(raw, server_hostname="bench.local") as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: bench.local\r\nConnection: close\r\n\r\n")
            body = b""
            while chunk := tls.recv(4096):
                body += chunk
    except Exception as e:
        raise HarnessError(f"GET https://127.0.0.1:{port}/ through {name} failed: {e}; "
                           f"see {log_path}\n{_tail(log_path)}") from None
    if not body.startswith(b"HTTP/1.1 200") or not body.endswith(b"hello\n"):
        raise HarnessError(f"GET over TLS through {name}: unexpected answer {body[:80]!r}")


def tls_resumes(port: int, session: Path) -> bool:
    """Whether the listener on `port` resumes a session: `openssl s_client` sends a request
    and reads to the end (so TLS 1.3 tickets arrive) with -sess_out, then again with -sess_in,
    and says `Reused` or `New`. No session written (TLS 1.3 without a ticket) is no resumption."""
    session.parent.mkdir(parents=True, exist_ok=True)
    session.unlink(missing_ok=True)
    req = "GET / HTTP/1.1\r\nHost: bench.local\r\nConnection: close\r\n\r\n"
    base = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername",
            "bench.local", "-ign_eof"]
    try:
        subprocess.run(base + ["-sess_out", str(session)], input=req, capture_output=True,
                       text=True, timeout=10, env=_client_env())
        if not session.exists():
            return False
        r = subprocess.run(base + ["-sess_in", str(session)], input=req, capture_output=True,
                           text=True, timeout=10, env=_client_env())
    except (OSError, subprocess.TimeoutExpired) as e:
        raise HarnessError(f"openssl s_client on port {port} failed: {e}") from None
    return any(line.startswith("Reused, ") for line in r.stdout.splitlines())


def tls_negotiated(port: int) -> str:
    """What `openssl s_client` (OpenSSL's defaults, as wrk uses them) negotiates on `port`:
    protocol version, cipher suite and key exchange group, as s_client -brief prints them."""
    try:
        r = subprocess.run(["openssl", "s_client", "-brief", "-connect", f"127.0.0.1:{port}",
                            "-servername", "bench.local"], input="", capture_output=True,
                           text=True, timeout=10, env=_client_env())
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"openssl s_client failed: {e}"
    keep = ("Protocol version", "Ciphersuite", "Peer signature type", "Server Temp Key",
            "Negotiated TLS1.3 group")
    lines = [x.strip() for x in (r.stdout + r.stderr).splitlines()
             if x.strip().startswith(keep)]
    return "; ".join(lines) or "(nothing negotiated)"


def iperf_argv(port: int, secs: int) -> list[str]:
    return ["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", str(secs), "-J"]


def parse_iperf(text: str) -> dict:
    try:
        data = json.loads(text)
    except ValueError:
        raise HarnessError("iperf3 printed no JSON:\n" + text[-2000:]) from None
    if data.get("error"):
        raise HarnessError(f"iperf3 error: {data['error']}")
    end = data.get("end", {})
    recv, sent = end.get("sum_received"), end.get("sum_sent", {})
    if not recv:
        raise HarnessError("iperf3 JSON has no end.sum_received")
    return {
        "bytes": int(recv["bytes"]),
        "seconds": float(recv["seconds"]),
        "gbps": float(recv["bits_per_second"]) / 1e9,
        "retransmits": sent.get("retransmits"),
    }


def bolt_load_argv(binary: Path, port: int, conns: int, pipeline: int, secs: int,
                   payload: int) -> list[str]:
    return [str(binary), "load", "--target", f"127.0.0.1:{port}", "--connections", str(conns),
            "--pipeline", str(pipeline), "--seconds", str(secs), "--payload", str(payload),
            "--service", BOLT_SERVICE]


def parse_bolt_load(text: str) -> dict:
    """The one JSON line of `bolt-load load`: requests, errors, seconds, rps, p50_us, p99_us."""
    line = next((x for x in reversed(text.splitlines()) if x.startswith("{")), None)
    try:
        data = json.loads(line) if line else None
    except ValueError:
        data = None
    if not isinstance(data, dict) or not {"requests", "errors", "rps"} <= data.keys():
        raise HarnessError("bolt-load printed no result line:\n" + text[-2000:])
    return {
        "requests": int(data["requests"]),
        "errors": int(data["errors"]),
        "load_seconds": float(data.get("seconds") or 0),
        "rps": float(data["rps"]),
        "p50_ms": data["p50_us"] / 1e3 if data.get("p50_us") is not None else None,
        "p99_ms": data["p99_us"] / 1e3 if data.get("p99_us") is not None else None,
    }


def established_to(port: int) -> int:
    """TCP connections on 127.0.0.1 in state ESTABLISHED whose remote end is `port` (i.e. the
    clients' ends of connections to that listener)."""
    n = 0
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if parts[3] == "01" and int(parts[2].rsplit(":", 1)[1], 16) == port:
                        n += 1
        except OSError:
            pass
    return n


# --------------------------------------------------------------------------------------------
# The run


class Bench:
    def __init__(self, args, procs: Procs):
        self.a = args
        self.p = procs
        self.work = args.out / "work"
        self.runs: list[dict] = []
        self.ports: dict[str, int] = {}
        self.iperf = None
        self.backend = None  # the nginx backend (tcp, http modes)
        self.bolt_echo = None  # `bolt-load serve` (bolt mode)
        self.negotiated: dict[str, str] = {}  # tls mode: what each proxy negotiated
        self.tls_material: tuple[bytes, bytes] | None = None  # (cert, key) PEM, one per run
        self.extra_cmds: dict[str, str] = dict(args.extra)  # --extra NAME=CMD

    # ---- setup

    def pick_ports(self) -> None:
        offsets = {"backend": 0, "iperf": 1, "backend_status": 2, "bolt_echo": 3,
                   "sluice_http": 10, "sluice_bulk": 11, "sluice_l7": 12, "sluice_bolt": 13,
                   "nginx_http": 20, "nginx_bulk": 21, "nginx_l7": 22,
                   "haproxy_http": 30, "haproxy_bulk": 31, "haproxy_l7": 32,
                   # Per proxy: the default TLS listener (resumed, keep-alive) and three with
                   # resumption off (TLS 1.3 X25519, TLS 1.2, TLS 1.3 P-256).
                   "sluice_tls_resumed": 14, "sluice_tls_ka": 14, "sluice_tls_full": 15,
                   "sluice_tls_full12": 16, "sluice_tls_full_p256": 17,
                   "nginx_tls_resumed": 24, "nginx_tls_ka": 24, "nginx_tls_full": 25,
                   "nginx_tls_full12": 26, "nginx_tls_full_p256": 27,
                   "haproxy_tls_resumed": 34, "haproxy_tls_ka": 34, "haproxy_tls_full": 35,
                   "haproxy_tls_full12": 36, "haproxy_tls_full_p256": 37,
                   # An HTTP/1.1 proxy behind TLS (resumption off; upstream keep-alive).
                   "sluice_tls_full_l7": 18, "sluice_tls_ka_l7": 18, "nginx_tls_full_l7": 28,
                   "nginx_tls_ka_l7": 28, "haproxy_tls_full_l7": 38, "haproxy_tls_ka_l7": 38}
        for i, (name, _) in enumerate(self.a.extra):
            offsets[f"{name}_l7"] = 40 + i
        for base in PORT_BASES:
            ports = {k: base + off for k, off in offsets.items()}
            if all(port_free(p) for p in ports.values()):
                self.ports = ports
                return
        raise HarnessError(f"no free port block among bases {PORT_BASES[0]}..{PORT_BASES[-1]} "
                           "on 127.0.0.1 (is another harness running?)")

    def start_backend(self) -> None:
        d = self.work / "backend"
        (d / "tmp").mkdir(parents=True, exist_ok=True)
        conf = render("backend-nginx.conf", d / "nginx.conf", DIR=d,
                      BACKEND_PORT=self.ports["backend"], STATUS_PORT=self.ports["backend_status"])
        log = d / "stderr.log"
        proc = self.p.start("backend nginx", ["nginx", "-c", str(conf), "-p", f"{d}/",
                                              "-g", "daemon off;"], log, cpu=LOADGEN_CPU)
        self.backend = proc
        wait_listening(self.ports["backend"], proc, "backend nginx", log)
        http_get_ok(self.ports["backend"], "backend nginx", d / "error.log")

    def start_bolt_echo(self) -> None:
        """The Bolt backend: `bolt-load serve` (echoes each request's content, status 0), one
        thread, on the load generator's core."""
        log = self.work / "bolt-echo" / "serve.log"
        port = self.ports["bolt_echo"]
        self.bolt_echo = self.p.start("bolt echo server",
                                      [str(self.a.bolt_load), "serve", "--listen",
                                       f"127.0.0.1:{port}"], log, cpu=LOADGEN_CPU)
        wait_listening(port, self.bolt_echo, "bolt echo server", log)
        self.bolt_ok(port, "bolt echo server", log)

    def bolt_ok(self, port: int, name: str, log_path: Path) -> None:
        """One Bolt request (`bolt-load load --seconds 0`: each connection sends its pipeline
        once), so a listener that accepts but does not answer fails fast."""
        argv = bolt_load_argv(self.a.bolt_load, port, 1, 1, 0, self.a.payload)
        probe_log = log_path.parent / "probe.log"
        try:
            r = parse_bolt_load(self.p.run(f"bolt probe ({name})", argv, probe_log, timeout=15))
        except HarnessError as e:
            raise HarnessError(f"a Bolt request through {name} failed: {e}\n"
                               f"{_tail(log_path)}") from None
        if r["requests"] != 1 or r["errors"]:
            raise HarnessError(f"a Bolt request through {name}: {r['requests']} answered, "
                               f"{r['errors']} errors (see {probe_log}, {log_path})\n"
                               f"{_tail(log_path)}")

    def write_tls_files(self, d: Path) -> None:
        """The run's certificate (ECDSA P-256, self-signed, SAN bench.local), made once with
        openssl and written into each proxy's directory: cert.pem, key.pem (PKCS#8) and
        combined.pem (HAProxy's cert + key in one file)."""
        if self.tls_material is None:
            t = self.work / "tls"
            t.mkdir(parents=True, exist_ok=True)
            argv = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(t / "key.pem"),
                    "-out", str(t / "cert.pem"), "-days", "2", "-subj", "/CN=bench.local",
                    "-addext", "subjectAltName=DNS:bench.local"]
            r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            if r.returncode != 0:
                raise HarnessError(f"`{shlex.join(argv)}` failed:\n{r.stderr}")
            self.tls_material = ((t / "cert.pem").read_bytes(), (t / "key.pem").read_bytes())
        cert, key = self.tls_material
        (d / "cert.pem").write_bytes(cert)
        (d / "key.pem").write_bytes(key)
        (d / "combined.pem").write_bytes(cert + key)

    def validate_sluice(self, cfg: Path, log: Path) -> None:
        """`sluice validate -c CFG` must say ok before the run (e.g. a binary built without the
        listener kind the config uses fails here, with Sluice's own explanation)."""
        argv = [str(self.a.sluice), "validate", "-c", str(cfg)]
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise HarnessError(f"`{shlex.join(argv)}` failed: {e}") from None
        text = (r.stdout + r.stderr).strip()
        with open(log, "a") as f:
            f.write(f"# {_now()} $ {shlex.join(argv)}\n{text}\n# exit status {r.returncode}\n")
        if r.returncode != 0:
            raise HarnessError(f"`{shlex.join(argv)}` exited with {r.returncode}:\n"
                               + "\n".join("    | " + x for x in text.splitlines()[-15:]))

    def start_proxy(self, name: str, mode: str) -> tuple[subprocess.Popen, Path]:
        """One proxy instance for one mode: tcp (L4: http + bulk listeners, the original
        configs), http (L7: one HTTP/1.1 listener) or bolt (Sluice only: one bolt listener), in
        work/<name>, work/<name>-l7 or work/<name>-bolt."""
        d = self.work / (name + MODE_DIR_SUFFIX[mode])
        d.mkdir(parents=True, exist_ok=True)
        tests = MODE_TESTS[mode]
        if mode == "bolt":
            if name != "sluice":
                raise HarnessError(f"{name} has no Bolt support")
            ports = dict(BOLT_PORT=self.ports["sluice_bolt"], ECHO_PORT=self.ports["bolt_echo"],
                         SERVICE=BOLT_SERVICE)
            tpl = "sluice-bolt.yaml"
        elif name in self.extra_cmds:
            if mode != "http":
                raise HarnessError(f"extra proxy {name} runs in --mode http only")
            ports, tpl = {}, None
        elif mode == "tls":
            ports = dict(TLS_PORT=self.ports[f"{name}_tls_ka"],
                         FULL_PORT=self.ports[f"{name}_tls_full"],
                         FULL12_PORT=self.ports[f"{name}_tls_full12"],
                         P256_PORT=self.ports[f"{name}_tls_full_p256"],
                         L7_TLS_PORT=self.ports[f"{name}_tls_full_l7"],
                         BACKEND_PORT=self.ports["backend"])
            tpl = {"sluice": "sluice-tls.yaml", "nginx": "nginx-stream-tls.conf",
                   "haproxy": "haproxy-tls.cfg"}[name]
            self.write_tls_files(d)
        elif mode == "tcp":
            ports = dict(HTTP_PORT=self.ports[f"{name}_http"], BULK_PORT=self.ports[f"{name}_bulk"],
                         BACKEND_PORT=self.ports["backend"], IPERF_PORT=self.ports["iperf"])
            tpl = {"sluice": "sluice.yaml", "nginx": "nginx-stream.conf",
                   "haproxy": "haproxy.cfg"}[name]
        else:
            ports = dict(L7_PORT=self.ports[f"{name}_l7"], BACKEND_PORT=self.ports["backend"])
            tpl = {"sluice": "sluice-http.yaml", "nginx": "nginx-http.conf",
                   "haproxy": "haproxy-http.cfg"}[name]
        if name in self.extra_cmds:
            cmd = (self.extra_cmds[name].replace("{port}", str(self.ports[f"{name}_l7"]))
                   .replace("{upstream}", f"127.0.0.1:{self.ports['backend']}"))
            argv = shlex.split(cmd)
            log = d / "proxy.log"
        elif name == "sluice":
            extra = dict(DIR=d) if mode == "tls" else {}
            cfg = render(tpl, d / "sluice.yaml", **extra, **ports)
            log = d / "sluice.log"
            self.validate_sluice(cfg, log)
            argv = [str(self.a.sluice), "run", "-c", str(cfg), "--workers", "1",
                    *shlex.split(self.a.sluice_args)]
        elif name == "nginx":
            (d / "tmp").mkdir(exist_ok=True)
            extra = dict(LOAD_MODULE=self.load_module) if mode in ("tcp", "tls") else {}
            cfg = render(tpl, d / "nginx.conf", DIR=d, **extra, **ports)
            argv = ["nginx", "-c", str(cfg), "-p", f"{d}/", "-g", "daemon off;"]
            log = d / "stderr.log"
        elif name == "haproxy":
            extra = dict(DIR=d) if mode == "tls" else {}
            cfg = render(tpl, d / "haproxy.cfg", **extra, **ports)
            argv = ["haproxy", "-f", str(cfg), "-db"]
            log = d / "haproxy.log"
        else:
            raise AssertionError(name)
        proc = self.p.start(name, argv, log, cpu=PROXY_CPU)
        try:
            for key in tests:
                wait_listening(self.ports[f"{name}_{key}"], proc, label(name, key), log)
            if mode == "bolt":
                self.bolt_ok(self.ports[f"{name}_bolt"], label(name, "bolt"), log)
            elif mode == "tls":
                for test in TLS_TESTS:
                    port = self.ports[f"{name}_{test}"]
                    https_get_ok(port, label(name, test), log)
                    self.negotiated[(name, test)] = tls_negotiated(port)
                    resumes = tls_resumes(port, self.work / "tls" / f"{name}-{test}.sess")
                    if resumes != TLS_RESUMES[test]:
                        raise HarnessError(
                            f"{label(name, test)} {test} listener (port {port}) "
                            f"{'resumes' if resumes else 'does not resume'} sessions; "
                            f"the test needs it to {'resume' if TLS_RESUMES[test] else 'not'}")
            else:
                http_get_ok(self.ports[f"{name}_{tests[0]}"], label(name, tests[0]), log)
        except BaseException:
            self.p.stop(proc)
            raise
        return proc, log

    # ---- measurement

    def measure(self, proxy: subprocess.Popen | None, backend: subprocess.Popen,
                argv: list[str], log: Path, secs: int, name: str) -> tuple[str, dict]:
        count_conns = backend is self.backend
        acc0 = backend_accepts(self.ports["backend_status"]) if count_conns else None
        cpu0 = read_cpu_times()
        t0 = time.monotonic()
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)  # reaped children: the load generator
        back0, _ = tree_cpu_ticks(backend.pid)
        before, _ = tree_cpu_ticks(proxy.pid) if proxy else (0, [])
        out = self.p.run(name, argv, log, timeout=secs + 30, cpu=LOADGEN_CPU)
        time.sleep(0.2)  # let the proxy finish closing the connections; that work counts too
        after, pids = tree_cpu_ticks(proxy.pid) if proxy else (0, [])
        back1, _ = tree_cpu_ticks(backend.pid)
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall = time.monotonic() - t0
        cpu1 = read_cpu_times()
        acc1 = backend_accepts(self.ports["backend_status"]) if count_conns else None
        m = {
            "wall_s": wall,
            "loadavg1": _loadavg()[0],
            "loadgen_cpu_s": (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime),
            "backend_cpu_s": (back1 - back0) / CLK_TCK,
            "core0_busy_pct": core_busy(cpu0, cpu1, LOADGEN_CPU),
            "core0_softirq_pct": core_busy(cpu0, cpu1, LOADGEN_CPU, 1),
            "core1_busy_pct": core_busy(cpu0, cpu1, PROXY_CPU),
            "core1_softirq_pct": core_busy(cpu0, cpu1, PROXY_CPU, 1),
        }
        if acc0 is not None and acc1 is not None:
            # Connections the backend accepted during the run, minus the first status query's own.
            m["backend_conns"] = acc1 - acc0 - 1
        if m["core0_busy_pct"] is not None:
            # Core 0 runs only the load generator and the backend; the rest is someone else's.
            m["core0_other_pct"] = max(0.0, m["core0_busy_pct"] - m["core0_softirq_pct"]
                                       - 100.0 * (m["loadgen_cpu_s"] + m["backend_cpu_s"]) / wall)
        if proxy:
            if proxy.poll() is not None:
                raise HarnessError(f"proxy exited (status {proxy.returncode}) during the load")
            m["proxy_cpu_s"] = (after - before) / CLK_TCK
            m["proxy_pids"] = pids
            # A proxy may re-pin its own threads; check that all of them stayed on their core.
            m["proxy_cpus_allowed"] = cpus_allowed(pids)
            if m["core1_busy_pct"] is not None:
                # The proxy is pinned to this core: what is left, apart from the softirq work
                # of its own traffic, is someone else's load.
                m["core1_other_pct"] = max(0.0, m["core1_busy_pct"] - m["core1_softirq_pct"]
                                           - 100.0 * m["proxy_cpu_s"] / wall)
        elif m["core1_busy_pct"] is not None:
            m["core1_other_pct"] = max(0.0, m["core1_busy_pct"] - m["core1_softirq_pct"])
        return out, m

    def http_test(self, who: str, port: int, proxy, log_dir: Path, rep: int,
                  host: str | None = None) -> dict:
        a = self.a
        log = log_dir / f"wrk-r{rep}.log"
        if a.warmup > 0:
            self.p.run(f"wrk warm-up ({who})", wrk_argv(port, a.connections, a.warmup, host), log,
                       timeout=a.warmup + 30, cpu=LOADGEN_CPU)
        out, m = self.measure(proxy, self.backend,
                              wrk_argv(port, a.connections, a.duration, host),
                              log, a.duration, f"wrk ({who})")
        r = parse_wrk(out)
        r.update(m)
        if r["requests"] == 0:
            raise HarnessError(f"wrk through {who} completed no request; see {log}")
        if r["non_2xx"] or r["socket_errors"].get("connect"):
            r["warning"] = (f"non-2xx {r['non_2xx']}, socket errors {r['socket_errors']}")
        elif any(r["socket_errors"].values()):
            r["warning"] = f"socket errors {r['socket_errors']}"
        if proxy:
            r["req_per_cpu_s"] = r["requests"] / r["proxy_cpu_s"] if r["proxy_cpu_s"] > 0 else None
        return r

    def l7_test(self, who: str, port: int, proxy, log_dir: Path, rep: int) -> dict:
        return self.http_test(who, port, proxy, log_dir, rep, host=L7_HOST)

    def tls_test(self, who: str, port: int, proxy, log_dir: Path, rep: int,
                 close: bool, test: str) -> dict:
        """wrk over https: with close, one handshake per request (full or resumed, by the
        listener `test` runs on); else keep-alive."""
        a = self.a
        kind = test.removeprefix("tls_")
        log = log_dir / f"wrk-tls-{kind}-r{rep}.log"
        argv = lambda secs: wrk_argv(port, a.connections, secs, L7_HOST, https=True, close=close)
        if a.warmup > 0:
            self.p.run(f"wrk warm-up ({who}, tls {kind})", argv(a.warmup), log,
                       timeout=a.warmup + 30, cpu=LOADGEN_CPU)
        out, m = self.measure(proxy, self.backend, argv(a.duration), log, a.duration,
                              f"wrk ({who}, tls {kind})")
        r = parse_wrk(out)
        r.update(m)
        if r["requests"] == 0:
            raise HarnessError(f"wrk over TLS through {who} completed no request; see {log}")
        if r["non_2xx"] or any(r["socket_errors"].values()):
            r["warning"] = f"non-2xx {r['non_2xx']}, socket errors {r['socket_errors']}"
        r["negotiated"] = self.negotiated.get((who, test))
        r["req_per_cpu_s"] = r["requests"] / r["proxy_cpu_s"] if r["proxy_cpu_s"] > 0 else None
        return r

    def tls_full_test(self, who: str, port: int, proxy, log_dir: Path, rep: int) -> dict:
        return self.tls_test(who, port, proxy, log_dir, rep, close=True, test="tls_full")

    def tls_full12_test(self, who: str, port: int, proxy, log_dir: Path, rep: int) -> dict:
        return self.tls_test(who, port, proxy, log_dir, rep, close=True, test="tls_full12")

    def tls_full_p256_test(self, who: str, port: int, proxy, log_dir: Path, rep: int) -> dict:
        return self.tls_test(who, port, proxy, log_dir, rep, close=True, test="tls_full_p256")

    def tls_resumed_test(self, who: str, port: int, proxy, log_dir: Path, rep: int) -> dict:
        return self.tls_test(who, port, proxy, log_dir, rep, close=True, test="tls_resumed")

    def tls_ka_test(self, who: str, port: int, proxy, log_dir: Path, rep: int) -> dict:
        return self.tls_test(who, port, proxy, log_dir, rep, close=False, test="tls_ka")

    def tls_full_l7_test(self, who: str, port: int, proxy, log_dir: Path, rep: int) -> dict:
        return self.tls_test(who, port, proxy, log_dir, rep, close=True, test="tls_full_l7")

    def tls_ka_l7_test(self, who: str, port: int, proxy, log_dir: Path, rep: int) -> dict:
        return self.tls_test(who, port, proxy, log_dir, rep, close=False, test="tls_ka_l7")

    def bulk_test(self, who: str, port: int, proxy, log_dir: Path, rep: int) -> dict:
        a = self.a
        log = log_dir / f"iperf3-r{rep}.log"
        try:
            out, m = self.measure(proxy, self.iperf, iperf_argv(port, a.duration), log,
                                  a.duration, f"iperf3 ({who})")
            r = parse_iperf(out)
        except HarnessError:
            self.restart_iperf_server()  # do not let a broken test leave it busy
            raise
        r.update(m)
        if proxy:
            cpu = r["proxy_cpu_s"]
            r["gbit_per_cpu_s"] = r["bytes"] * 8 / 1e9 / cpu if cpu > 0 else None
        return r

    def bolt_test(self, who: str, port: int, proxy, log_dir: Path, rep: int) -> dict:
        a = self.a
        log = log_dir / f"bolt-load-r{rep}.log"
        argv = lambda secs: bolt_load_argv(a.bolt_load, port, a.connections, a.pipeline, secs,
                                           a.payload)
        if a.warmup > 0:
            self.p.run(f"bolt-load warm-up ({who})", argv(a.warmup), log,
                       timeout=a.warmup + 30, cpu=LOADGEN_CPU)
        out, m = self.measure(proxy, self.bolt_echo, argv(a.duration), log, a.duration,
                              f"bolt-load ({who})")
        r = parse_bolt_load(out)
        r.update(m)
        if proxy:
            # The proxy's upstream connections to the echo server (still open after the run).
            r["upstream_conns"] = established_to(self.ports["bolt_echo"])
        summary = (f"{r['requests']:,} answered, {r['errors']:,} errors, {r['rps']:,.0f} req/s"
                   + (f", proxy {r['proxy_cpu_s']:.2f} CPU-s" if proxy else ""))
        if r["errors"]:
            raise HarnessError(f"bolt-load through {who}: {r['errors']:,} ERRORS (must be 0): "
                               f"{summary}; see {log}")
        if r["requests"] == 0:
            raise HarnessError(f"bolt-load through {who} completed no request ({summary}); "
                               f"see {log}")
        if proxy:
            r["req_per_cpu_s"] = r["requests"] / r["proxy_cpu_s"] if r["proxy_cpu_s"] > 0 else None
        return r

    def restart_iperf_server(self) -> None:
        if self.iperf is not None:
            self.p.stop(self.iperf)
        log = self.work / "iperf3-server" / "server.log"
        self.iperf = self.p.start("iperf3 server", ["iperf3", "-s", "-B", "127.0.0.1", "-p",
                                                    str(self.ports["iperf"])],
                                  log, cpu=LOADGEN_CPU)
        wait_listening(self.ports["iperf"], self.iperf, "iperf3 server", log)

    def run_one(self, who: str, mode: str, rep: int) -> None:
        log_dir = self.work / (who + MODE_DIR_SUFFIX[mode])
        log_dir.mkdir(parents=True, exist_ok=True)
        proxy, plog = None, None
        fns = {"http": self.http_test, "bulk": self.bulk_test, "l7": self.l7_test,
               "bolt": self.bolt_test, "tls_full": self.tls_full_test,
               "tls_full12": self.tls_full12_test, "tls_full_p256": self.tls_full_p256_test,
               "tls_resumed": self.tls_resumed_test, "tls_ka": self.tls_ka_test,
               "tls_full_l7": self.tls_full_l7_test, "tls_ka_l7": self.tls_ka_l7_test}
        tests = [(t, fns[t]) for t in MODE_TESTS[mode]
                 if not self.a.tests or t in self.a.tests]
        try:
            if who != "direct":
                proxy, plog = self.start_proxy(who, mode)
            for test, fn in tests:
                port = (self.ports[DIRECT_PORT[test]] if who == "direct"
                        else self.ports[f"{who}_{test}"])
                print(f"  [{rep + 1}/{self.a.repeat}] {label(who, test):<18} {test:<4} ...",
                      end="", flush=True, file=sys.stderr)
                try:
                    r = fn(who, port, proxy, log_dir, rep)
                    self.runs.append({"repeat": rep, "who": who, "test": test, **r})
                    print(" " + _brief(test, r), file=sys.stderr)
                except HarnessError as e:
                    self.runs.append({"repeat": rep, "who": who, "test": test, "error": str(e)})
                    print(f" FAILED\n{e}", file=sys.stderr)
                    if proxy is not None and proxy.poll() is not None:
                        # Proxy died: the remaining tests of this proxy cannot run.
                        for t2, _ in tests[tests.index((test, fn)) + 1:]:
                            self.runs.append({"repeat": rep, "who": who, "test": t2,
                                              "error": f"{label(who, t2)} exited earlier"})
                        break
        except HarnessError as e:
            print(f"  [{rep + 1}/{self.a.repeat}] {label(who, tests[0][0])}: FAILED to start\n{e}",
                  file=sys.stderr)
            for test, _ in tests:
                self.runs.append({"repeat": rep, "who": who, "test": test,
                                  "error": f"start failed: {e}"})
        finally:
            if proxy is not None:
                self.p.stop(proxy)

    def run(self) -> None:
        self.pick_ports()
        if "nginx" in self.a.only and ("tcp" in self.a.modes or "tls" in self.a.modes):
            self.load_module = nginx_load_module_line()
        if "tcp" in self.a.modes or "http" in self.a.modes or "tls" in self.a.modes:
            self.start_backend()
        if "tcp" in self.a.modes:
            self.restart_iperf_server()
        if "bolt" in self.a.modes:
            self.start_bolt_echo()
        whos = list(self.a.only)
        for rep in range(self.a.repeat):
            order = whos[rep % len(whos):] + whos[:rep % len(whos)]  # rotate for fairness
            if not self.a.no_direct:
                order = ["direct", *order]
            for mode in self.a.modes:
                for who in order:
                    if who == "direct" and mode == "tls":
                        continue  # the backend speaks no TLS: there is no direct TLS row
                    self.run_one(who, mode, rep)


def _brief(test: str, r: dict) -> str:
    cpu = r.get("proxy_cpu_s")
    cpu_txt = f", proxy {cpu:.2f} CPU-s" if cpu is not None else ""
    if test == "bolt":
        up = (f", upstream conns {r['upstream_conns']}" if r.get("upstream_conns") is not None
              else "")
        return (f"{r['rps']:,.0f} req/s, p50 {_ms(r['p50_ms'])}, p99 {_ms(r['p99_ms'])}, "
                f"errors {r['errors']}{cpu_txt}{up}")
    if test in TLS_TESTS:
        return (f"{r['rps']:,.0f} req/s, p50 {_ms(r['p50_ms'])}, p99 {_ms(r['p99_ms'])}"
                f"{cpu_txt}" + (f"  WARNING {r['warning']}" if r.get("warning") else ""))
    if test in ("http", "l7"):
        conns = (f", backend conns opened {r['backend_conns']}"
                 if r.get("backend_conns") is not None else "")
        return (f"{r['rps']:,.0f} req/s, p50 {_ms(r['p50_ms'])}, p99 {_ms(r['p99_ms'])}"
                f"{cpu_txt}{conns}" + (f"  WARNING {r['warning']}" if r.get("warning") else ""))
    return f"{r['gbps']:.2f} Gbit/s{cpu_txt}"


# --------------------------------------------------------------------------------------------
# Report


def _ms(v) -> str:
    if v is None:
        return "—"
    return f"{v:.3f} ms" if v < 10 else f"{v:.1f} ms"


def _f(v, fmt: str) -> str:
    return "—" if v is None else format(v, fmt)


def _median(values):
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def summarize(runs: list[dict], who: str, test: str) -> dict | None:
    rs = [r for r in runs if r["who"] == who and r["test"] == test]
    ok = [r for r in rs if "error" not in r]
    if not rs:
        return None
    s = {"n": len(ok), "failed": len(rs) - len(ok)}
    if not ok:
        return s
    keys = set().union(*(r.keys() for r in ok))
    for k in keys:
        if all(isinstance(r.get(k), (int, float)) or r.get(k) is None for r in ok) and \
                k not in ("repeat",):
            s[k] = _median(r.get(k) for r in ok)
    return s


def _label(who: str, s: dict, test: str = "http") -> str:
    if s.get("failed"):
        return f"{label(who, test)} ({s['failed']} of {s['failed'] + s['n']} runs FAILED)"
    return label(who, test)


def _ratio(a, b):
    return a / b if a is not None and b else None


def _x(v) -> str:
    return "—" if v is None else f"×{v:.2f}"


def _wrk_table(L: list[str], runs: list[dict], whos: list[str], test: str) -> dict:
    """The req/s table of one wrk test (http: L4, l7: L7); returns the per-proxy summaries."""
    l7 = test == "l7"
    L.append("| proxy | req/s | p50 | p99 | proxy CPU-s | proxy CPU % | req per proxy CPU-s "
             "| vs nginx | vs HAProxy |" + (" backend conns opened |" if l7 else ""))
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if l7 else ""))
    S = {w: summarize(runs, w, test) for w in whos}
    base_n = (S.get("nginx") or {}).get("req_per_cpu_s")
    base_h = (S.get("haproxy") or {}).get("req_per_cpu_s")
    for w in whos:
        s = S[w]
        if not s or s["n"] == 0:
            L.append(f"| {label(w, test)} | FAILED | | | | | | | |" + (" |" if l7 else ""))
            continue
        cpu = s.get("proxy_cpu_s")
        pct = 100 * cpu / s["wrk_seconds"] if cpu is not None and s.get("wrk_seconds") else None
        eff = s.get("req_per_cpu_s")
        L.append(f"| {_label(w, s, test)} | {_f(s['rps'], ',.0f')} | {_ms(s.get('p50_ms'))} | "
                 f"{_ms(s.get('p99_ms'))} | {_f(cpu, '.2f')} | {_f(pct, '.0f')} | "
                 f"{_f(eff, ',.0f')} | {_x(_ratio(eff, base_n)) if w != 'direct' else '—'} | "
                 f"{_x(_ratio(eff, base_h)) if w != 'direct' else '—'} |"
                 + (f" {_f(s.get('backend_conns'), ',.0f')} |" if l7 else ""))
    L.append("")
    return S


def render_report(args, runs: list[dict], header: dict) -> str:
    whos = (["direct"] if not args.no_direct else []) + list(args.only)
    tcp, http, bolt = "tcp" in args.modes, "http" in args.modes, "bolt" in args.modes
    tls = "tls" in args.modes
    L = []
    if bolt:
        title = "Bolt (SOFARPC) proxying, Sluice vs direct"
    elif tls:
        title = "TLS termination side by side (full handshakes, HTTPS keep-alive)"
    else:
        title = {(True, False): "L4 proxies side by side",
                 (False, True): "L7 (HTTP/1.1) proxies side by side",
                 (True, True): "L4 and L7 proxies side by side"}[(tcp, http)]
    L.append("# Sluice loopback benchmark: " + title)
    L.append("")
    L.append(f"- command: `{header['command']}` (cwd `{header['cwd']}`)")
    L.append(f"- date: {header['date']}; load average at start: {header['loadavg']}"
             + (f", at the end: {header['loadavg_end']}" if header.get("loadavg_end") else ""))
    L.append(f"- host: `nproc` = {header['nproc']}, CPU: {header['cpu_model']}, "
             f"kernel {header['kernel']}")
    L.append("- versions: " + "; ".join(f"{k} {v}" for k, v in header["versions"].items()))
    if bolt:
        backend, loadgen = ("Bolt echo server (`bolt-load serve`, one thread: status 0, request "
                            "content echoed)", "load generator (`bolt-load load`, one thread)")
        load = (f"{args.connections} connections x pipeline {args.pipeline} "
                f"({args.connections * args.pipeline} requests in flight), {args.payload}-byte "
                f"payload")
    else:
        backend, loadgen = "backend (nginx `return 200`, keep-alive, 1 worker)", "load generator"
        load = f"{args.connections} connections"
    L.append(f"- method: {backend} and {loadgen} "
             f"pinned to core {LOADGEN_CPU}; the proxy under test pinned to core {PROXY_CPU} with "
             f"one worker/thread; proxy CPU = utime+stime (+ reaped children) of its "
             f"process tree from /proc/PID/stat around each measured run (clock tick {1000 // CLK_TCK} ms). "
             f"Everything started with niceness {args.nice}. "
             f"{args.duration} s per run, {load}, warm-up "
             f"{args.warmup} s (not counted), repeat {args.repeat} "
             f"(medians{', proxy order rotated' if args.repeat > 1 and len(args.only) > 1 else ''}).")
    if "sluice" in args.only:
        L.append(f"- Sluice command: `sluice run -c CFG --workers 1"
                 f"{' ' + args.sluice_args if args.sluice_args.strip() else ''}`")
    if header.get("incomplete"):
        L.append(f"- **incomplete run: {header['incomplete']}**")
    L.append("")

    S, B = {}, {}
    if tcp:
        # ---- HTTP
        L.append(f"## HTTP/1.1 keep-alive through the proxy (`wrk -t1 -c{args.connections} "
                 f"-d{args.duration}s --latency`)")
        L.append("")
        S = _wrk_table(L, runs, whos, "http")

        # ---- bulk
        L.append(f"## One bulk TCP stream through the proxy (`iperf3 -t {args.duration}`, "
                 f"control + data connection)")
        L.append("")
        L.append("| proxy | Gbit/s | proxy CPU-s | proxy CPU % | Gbit per proxy CPU-s "
                 "| vs nginx | vs HAProxy |")
        L.append("|---|---:|---:|---:|---:|---:|---:|")
        B = {w: summarize(runs, w, "bulk") for w in whos}
        bn = (B.get("nginx") or {}).get("gbit_per_cpu_s")
        bh = (B.get("haproxy") or {}).get("gbit_per_cpu_s")
        for w in whos:
            s = B[w]
            if not s or s["n"] == 0:
                L.append(f"| {LABEL[w]} | FAILED | | | | | |")
                continue
            cpu = s.get("proxy_cpu_s")
            pct = 100 * cpu / s["seconds"] if cpu is not None and s.get("seconds") else None
            eff = s.get("gbit_per_cpu_s")
            L.append(f"| {_label(w, s)} | {_f(s['gbps'], '.2f')} | {_f(cpu, '.2f')} | "
                     f"{_f(pct, '.0f')} | {_f(eff, '.2f')} | "
                     f"{_x(_ratio(eff, bn)) if w != 'direct' else '—'} | "
                     f"{_x(_ratio(eff, bh)) if w != 'direct' else '—'} |")
        L.append("")

    # ---- ratios
    proxies = [w for w in args.only]
    num = "sluice" if "sluice" in proxies else (proxies[0] if proxies else None)
    pairs = [(num, o) for o in proxies if o != num] if num else []
    if pairs and tcp:
        L.append("## Ratios (higher is better for Sluice except latency: lower is better)")
        L.append("")
        L.append("| ratio | req per proxy CPU-s | req/s | p50 | p99 | Gbit per proxy CPU-s "
                 "| Gbit/s |")
        L.append("|---|---:|---:|---:|---:|---:|---:|")
        for a, b in pairs:
            sa, sb = S.get(a) or {}, S.get(b) or {}
            ba, bb = B.get(a) or {}, B.get(b) or {}
            L.append(
                f"| {SHORT[a]} / {SHORT[b]} | {_x(_ratio(sa.get('req_per_cpu_s'), sb.get('req_per_cpu_s')))} | "
                f"{_x(_ratio(sa.get('rps'), sb.get('rps')))} | "
                f"{_x(_ratio(sa.get('p50_ms'), sb.get('p50_ms')))} | "
                f"{_x(_ratio(sa.get('p99_ms'), sb.get('p99_ms')))} | "
                f"{_x(_ratio(ba.get('gbit_per_cpu_s'), bb.get('gbit_per_cpu_s')))} | "
                f"{_x(_ratio(ba.get('gbps'), bb.get('gbps')))} |")
        L.append("")

    if http:
        # ---- L7
        L.append("## HTTP/1.1 keep-alive proxying (L7)")
        L.append("")
        L.append(f"`wrk -t1 -c{args.connections} -d{args.duration}s --latency "
                 f"-H 'Host: {L7_HOST}'` through an HTTP/1.1 proxy with upstream keep-alive: "
                 "Sluice `http` listener (one `*` virtual host, `prefix: /` route; it adds "
                 "x-forwarded-for and x-request-id), nginx `proxy_pass` to an upstream with "
                 "`keepalive 64` (`proxy_http_version 1.1`, `Connection \"\"`), HAProxy `mode http` "
                 "with `option http-keep-alive` and `http-reuse always`; access logs off. "
                 "\"backend conns opened\": connections the backend accepted during the measured "
                 "run (its nginx stub_status counter). Through a proxy, 0 to about "
                 f"{args.connections} means upstream keep-alive held for the whole run: 0 when the "
                 "warm-up's upstream connections were reused, up to one per client connection when "
                 "the proxy closed those that still had a request in flight as the warm-up's wrk "
                 "stopped; close to the number of requests would mean no upstream keep-alive. "
                 f"Direct: wrk's {args.connections} connections + 1 (wrk opens one probe "
                 "connection first).")
        L.append("")
        S7 = _wrk_table(L, runs, whos, "l7")
        if pairs:
            L.append("### Ratios, L7 (higher is better for Sluice except latency: lower is better)")
            L.append("")
            L.append("| ratio | req per proxy CPU-s | req/s | p50 | p99 |")
            L.append("|---|---:|---:|---:|---:|")
            for a, b in pairs:
                sa, sb = S7.get(a) or {}, S7.get(b) or {}
                L.append(
                    f"| {SHORT[a]} / {SHORT[b]} | "
                    f"{_x(_ratio(sa.get('req_per_cpu_s'), sb.get('req_per_cpu_s')))} | "
                    f"{_x(_ratio(sa.get('rps'), sb.get('rps')))} | "
                    f"{_x(_ratio(sa.get('p50_ms'), sb.get('p50_ms')))} | "
                    f"{_x(_ratio(sa.get('p99_ms'), sb.get('p99_ms')))} |")
            L.append("")
        names = [n for n, _ in args.extra]
        later = [(b, a) for i, a in enumerate(names) for b in names[i + 1:]]
        if later:
            L.append("### Ratios between the extra proxies (each later one / each earlier one)")
            L.append("")
            for n, cmd in args.extra:
                L.append(f"- {n}: `{cmd}`")
            L.append("")
            L.append("| ratio | req per proxy CPU-s | req/s | p50 | p99 | per run, req per proxy "
                     "CPU-s |")
            L.append("|---|---:|---:|---:|---:|---|")
            for b, a in later:
                sa, sb = S7.get(a) or {}, S7.get(b) or {}
                per_run = []
                for rep_ in range(args.repeat):
                    ra = next((r for r in runs if r["who"] == a and r["test"] == "l7"
                               and r["repeat"] == rep_ and "error" not in r), None)
                    rb = next((r for r in runs if r["who"] == b and r["test"] == "l7"
                               and r["repeat"] == rep_ and "error" not in r), None)
                    if ra and rb:
                        per_run.append(_x(_ratio(rb.get("req_per_cpu_s"),
                                                 ra.get("req_per_cpu_s"))))
                L.append(
                    f"| {b} / {a} | "
                    f"{_x(_ratio(sb.get('req_per_cpu_s'), sa.get('req_per_cpu_s')))} | "
                    f"{_x(_ratio(sb.get('rps'), sa.get('rps')))} | "
                    f"{_x(_ratio(sb.get('p50_ms'), sa.get('p50_ms')))} | "
                    f"{_x(_ratio(sb.get('p99_ms'), sa.get('p99_ms')))} | "
                    f"{' · '.join(per_run)} |")
            L.append("")

    if tls:
        # ---- TLS
        L.append("## TLS termination in front of an L4 relay")
        L.append("")
        L.append("Each proxy terminates TLS with the same ECDSA P-256 certificate (self-signed, "
                 "made with openssl for the run) and relays the plaintext to the backend: Sluice "
                 "`tcp_proxy` with `tls:` (rustls, aws-lc-rs), nginx `stream` `listen ssl` "
                 "(`ssl_session_cache shared:SSL:10m`), HAProxy `mode tcp` `bind ... ssl crt`. "
                 "wrk with `Connection: close` offers each new connection the previous one's "
                 "session, so the full-handshake tests run on listeners with resumption off on "
                 "every proxy (Sluice `session_tickets: false, session_cache: false`; nginx "
                 "`ssl_session_tickets off; ssl_session_cache off`; HAProxy `no-tls-tickets` "
                 "and `tune.ssl.cachesize 0`), and the resumed and keep-alive tests on the "
                 "default listeners; each listener was probed with `openssl s_client "
                 "-sess_out/-sess_in` before measuring (full: not resumed, default: resumed). "
                 + ("Negotiated with OpenSSL's defaults, as wrk uses them (`openssl s_client "
                    "-brief`):" if not args.tls_client_suites else
                    f"The clients (wrk and the probes) offered only `{args.tls_client_suites}` "
                    "(`--tls-client-suites`, an OpenSSL config of theirs; the servers keep their "
                    "own), so every proxy negotiated the same suite (`openssl s_client -brief`):"))
        L.append("")
        for test in TLS_TESTS:
            for w in args.only:
                neg = next((r.get("negotiated") for r in runs
                            if r["who"] == w and r["test"] == test and r.get("negotiated")),
                           None)
                L.append(f"- {test}, {label(w, test)}: {neg or '—'}")
        L.append("")
        titles = {
            "tls_full": "Full handshakes, TLS 1.3, X25519 (resumption off)",
            "tls_full12": "Full handshakes, TLS 1.2, X25519 (resumption off)",
            "tls_full_p256": "Full handshakes, TLS 1.3, P-256 (resumption off)",
            "tls_resumed": "Resumed handshakes, TLS 1.3 (the default listeners)",
            "tls_full_l7": "Full handshakes, TLS 1.3, X25519, HTTP/1.1 proxy with upstream "
                           "keep-alive (resumption off)",
        }
        tables = {}
        for test, title in titles.items():
            if args.tests and test not in args.tests:
                continue
            L.append(f"### {title}: `wrk -t1 -c{args.connections} -d{args.duration}s "
                     f"--latency -H 'Connection: close' https://…`")
            L.append("")
            L.append("\"req per proxy CPU-s\" is handshakes (each with one request) per proxy "
                     "CPU-second.")
            L.append("")
            tables[test] = _wrk_table(L, runs, [w for w in whos if w != "direct"], test)
        for test, title in (("tls_ka", "HTTPS keep-alive"),
                            ("tls_ka_l7", "HTTPS keep-alive, HTTP/1.1 proxy with upstream "
                                          "keep-alive")):
            if args.tests and test not in args.tests:
                continue
            L.append(f"### {title}: `wrk -t1 -c{args.connections} -d{args.duration}s "
                     f"--latency https://…`")
            L.append("")
            tables[test] = _wrk_table(L, runs, [w for w in whos if w != "direct"], test)
        if pairs:
            L.append("### Ratios, TLS (per proxy CPU-second)")
            L.append("")
            L.append("| ratio | full 1.3 X25519 | full 1.2 | full 1.3 P-256 | resumed | "
                     "HTTPS keep-alive | L7: full 1.3 X25519 | L7: HTTPS keep-alive |")
            L.append("|---|---:|---:|---:|---:|---:|---:|---:|")
            for a_, b_ in pairs:
                cells = [_x(_ratio(((tables.get(t) or {}).get(a_) or {}).get("req_per_cpu_s"),
                                   ((tables.get(t) or {}).get(b_) or {}).get("req_per_cpu_s")))
                         for t in TLS_TESTS]
                L.append(f"| {SHORT[a_]} / {SHORT[b_]} | " + " | ".join(cells) + " |")
            L.append("")

    if bolt:
        # ---- Bolt
        L.append(f"## Bolt v1 requests through the proxy (`bolt-load load --connections "
                 f"{args.connections} --pipeline {args.pipeline} --seconds {args.duration} "
                 f"--payload {args.payload}`)")
        L.append("")
        L.append(f"Each of {args.connections} connections keeps {args.pipeline} requests in "
                 f"flight (a new request is written as soon as a response arrives) for "
                 f"{args.duration} s; requests carry header `service: {BOLT_SERVICE}`, Hessian2 "
                 f"codec id and a {args.payload}-byte content that the echo server returns. Sluice: "
                 "one `bolt` listener, one route by that service to a one-host cluster (the echo "
                 "server); it multiplexes all downstream requests onto its upstream connection, "
                 "rewriting request ids. A response with a wrong id or a non-zero status, or a "
                 "request unanswered 5 s after the end, is an error; a run with any error is "
                 "FAILED. \"upstream conns\": the proxy's connections to the echo server after "
                 "the run.")
        L.append("")
        L.append("| proxy | requests/s | p50 | p99 | proxy CPU-s | proxy CPU % "
                 "| requests per proxy CPU-s | errors | upstream conns |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        SB = {w: summarize(runs, w, "bolt") for w in whos}
        for w in whos:
            s = SB[w]
            if not s or s["n"] == 0:
                L.append(f"| {label(w, 'bolt')} | FAILED | | | | | | | |")
                continue
            cpu = s.get("proxy_cpu_s")
            pct = (100 * cpu / s["load_seconds"] if cpu is not None and s.get("load_seconds")
                   else None)
            L.append(f"| {_label(w, s, 'bolt')} | {_f(s['rps'], ',.0f')} | "
                     f"{_ms(s.get('p50_ms'))} | {_ms(s.get('p99_ms'))} | {_f(cpu, '.2f')} | "
                     f"{_f(pct, '.0f')} | {_f(s.get('req_per_cpu_s'), ',.0f')} | "
                     f"{_f(s.get('errors'), ',.0f')} | {_f(s.get('upstream_conns'), '.0f')} |")
        L.append("")
        sd, ss = SB.get("direct") or {}, SB.get("sluice") or {}
        if sd.get("rps") and ss.get("rps"):
            L.append(f"Sluice / direct: requests/s ×{ss['rps'] / sd['rps']:.2f}"
                     + (f", p50 ×{ss['p50_ms'] / sd['p50_ms']:.2f}"
                        if ss.get("p50_ms") and sd.get("p50_ms") else "")
                     + (f", p99 ×{ss['p99_ms'] / sd['p99_ms']:.2f}"
                        if ss.get("p99_ms") and sd.get("p99_ms") else "") + ".")
            L.append("")
        L.append(f"Context: {MOSN_BOLT_NOTE} nginx and HAProxy do not speak Bolt, so there are "
                 "no comparison rows.")
        L.append("")

    # ---- per-run details
    L.append("## Runs")
    L.append("")
    L.append(f"| # | proxy | test | result | proxy CPU-s | load gen CPU-s | backend CPU-s "
             f"| core {LOADGEN_CPU} busy % | core {PROXY_CPU} busy % (softirq) | load avg 1 min "
             f"| notes |")
    L.append("|---:|---|---|---|---:|---:|---:|---:|---:|---:|---|")
    noisy = []
    for r in runs:
        lbl = label(r["who"], r["test"])
        if "error" in r:
            first = r["error"].splitlines()[0]
            L.append(f"| {r['repeat'] + 1} | {lbl} | {r['test']} | FAILED | | | | | | "
                     f"{_f(r.get('loadavg1'), '.2f')} | {first.replace('|', '/')} |")
            continue
        if r["test"] in ("http", "l7", *TLS_TESTS):
            res = (f"{r['requests']:,} req in {r['wrk_seconds']:.2f} s, {r['rps']:,.0f} req/s, "
                   f"p50 {_ms(r['p50_ms'])}, p99 {_ms(r['p99_ms'])}")
        elif r["test"] == "bolt":
            res = (f"{r['requests']:,} req in {r['load_seconds']:.2f} s, {r['rps']:,.0f} req/s, "
                   f"p50 {_ms(r['p50_ms'])}, p99 {_ms(r['p99_ms'])}, errors {r['errors']}")
        else:
            res = f"{r['bytes'] / 1e9:.2f} GB in {r['seconds']:.2f} s, {r['gbps']:.2f} Gbit/s"
        notes = [r["warning"]] if r.get("warning") else []
        if r["test"] == "l7" and r.get("backend_conns") is not None:
            notes.append(f"backend conns opened {r['backend_conns']}")
        if r["test"] == "bolt" and r.get("upstream_conns") is not None:
            notes.append(f"upstream conns {r['upstream_conns']}")
        if r["test"] == "bulk" and r.get("retransmits"):
            notes.append(f"retransmits {r['retransmits']}")
        allowed = r.get("proxy_cpus_allowed")
        if allowed and allowed != [PROXY_CPU]:
            notes.append(f"**proxy threads allowed on CPUs {'/'.join(allowed)}, not only "
                         f"{PROXY_CPU}**")
        other0, other = r.get("core0_other_pct"), r.get("core1_other_pct")
        if other0 is not None and other0 > 10:
            notes.append(f"other load on core {LOADGEN_CPU}: {other0:.0f} %")
        if other is not None and other > 10:
            notes.append(f"other load on core {PROXY_CPU}: {other:.0f} %")
        if max(other0 or 0, other or 0) > 10:
            noisy.append(max(other0 or 0, other or 0))
        notes = "; ".join(notes)
        L.append(f"| {r['repeat'] + 1} | {lbl} | {r['test']} | {res} | "
                 f"{_f(r.get('proxy_cpu_s'), '.2f')} | {_f(r.get('loadgen_cpu_s'), '.2f')} | "
                 f"{_f(r.get('backend_cpu_s'), '.2f')} | {_f(r.get('core0_busy_pct'), '.0f')} | "
                 f"{_f(r.get('core1_busy_pct'), '.0f')} "
                 f"({_f(r.get('core1_softirq_pct'), '.0f')}) | {_f(r.get('loadavg1'), '.2f')} "
                 f"| {notes} |")
    L.append("")
    if noisy:
        L.append(f"**Warning: processes outside the benchmark used up to {max(noisy):.0f} % of "
                 f"a benchmark core during {len(noisy)} run(s)** (see notes): the machine was "
                 "not quiet. CPU-second figures are still counted per process, but they compete "
                 "for the cores and caches, so raw req/s, Gbit/s and latency are noisier; rerun "
                 "on a quiet machine for publishable figures.")
        L.append("")
    L.append("Core busy % comes from /proc/stat over the measured run; load generator CPU from "
             "getrusage of the reaped wrk/iperf3/bolt-load client, backend CPU from "
             "/proc/PID/stat of the backend nginx (http, l7), iperf3 server (bulk) or "
             "`bolt-load serve` (bolt). Other load = core busy - softirq - "
             f"benchmark processes on that core. Load avg: 1-minute load average from "
             f"/proc/loadavg right after the run (it includes the benchmark's own ~2 runnable "
             f"processes). A proxy well below 100 % CPU with core "
             f"{LOADGEN_CPU} near 100 % means the load generator + backend were the bottleneck; "
             "the per-CPU-second figures stay comparable, raw req/s and Gbit/s less so.")
    L.append("")
    return "\n".join(L)


# --------------------------------------------------------------------------------------------
# Main


def _version(argv: list[str], pattern: str | None = None) -> str:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"? ({e})"
    text = (r.stdout + r.stderr).strip()
    if pattern:
        m = re.search(pattern, text)
        if m:
            return m.group(1)
    return text.splitlines()[0] if text else "?"


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        description="Loopback benchmark of Sluice vs nginx and HAProxy as L4 proxies (Sluice "
                    "tcp_proxy, nginx stream, HAProxy mode tcp) and as L7 HTTP/1.1 proxies (Sluice "
                    "http listener, nginx proxy_pass, HAProxy mode http): requests and bits per "
                    "proxy CPU-second.")
    ap.add_argument("--mode", choices=("tcp", "http", "all", "bolt", "tls", "transparent"),
                    default="all",
                    help="tcp: L4 tests (http + bulk through TCP proxies); http: L7 test (HTTP/1.1 "
                         "proxying with upstream keep-alive); all: both (default); bolt: Bolt v1 "
                         "through Sluice vs direct (bolt-load; not part of all); tls: TLS termination in front "
                         "of an L4 relay, full handshakes and HTTPS keep-alive (not part of all); "
                         "transparent: Sluice only, HTTP requests captured by iptables REDIRECT in "
                         "a network namespace (an original_dst route) vs the same Sluice as an "
                         "explicit proxy (root; not part of all)")
    ap.add_argument("--duration", type=int, default=None, help="seconds per measured run "
                    "(default 10; 2 with --smoke)")
    ap.add_argument("--connections", type=int, default=None, help="wrk connections "
                    "(default 50; 10 with --smoke); bolt-load connections with --mode bolt "
                    "(default 32, also with --smoke)")
    ap.add_argument("--pipeline", type=int, default=8, help="--mode bolt: requests in flight "
                    "per connection (default 8)")
    ap.add_argument("--payload", type=int, default=64, help="--mode bolt: request content "
                    "bytes (default 64)")
    ap.add_argument("--bolt-load", type=Path,
                    default=REPO / "target" / "release" / "bolt-load",
                    help="--mode bolt: the bolt-load binary (load generator and echo server; "
                         "default <repo>/target/release/bolt-load)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per proxy (--mode transparent: "
                    "of both paths); the median is reported (default 1)")
    ap.add_argument("--warmup", type=int, default=1, help="wrk warm-up seconds before each "
                    "measured HTTP run, not counted (default 1; 0 disables)")
    ap.add_argument("--tests", default="", metavar="LIST",
                    help="comma-separated subset of the mode's tests to measure, e.g. "
                         "tls_full_l7,tls_ka_l7 (default: all of them; listeners of the others "
                         "still start and are probed)")
    ap.add_argument("--only", default=",".join(PROXIES),
                    help="comma-separated subset of sluice,nginx,haproxy (default all)")
    ap.add_argument("--sluice", type=Path, default=REPO / "target" / "release" / "sluice",
                    help="Sluice binary (default <repo>/target/release/sluice)")
    ap.add_argument("--sluice-args", default="--log-level warn", metavar="ARGS",
                    help="extra arguments appended to `sluice run -c CFG --workers 1` "
                         "(default '--log-level warn'; '' for none)")
    ap.add_argument("--out", type=Path, default=HERE / "out",
                    help="output directory (default benches/loopback/out)")
    ap.add_argument("--no-direct", action="store_true",
                    help="skip the direct (no proxy) baseline runs")
    ap.add_argument("--nice", type=int, default=None,
                    help="niceness for everything the harness starts (backend, load generator, "
                         "proxies alike), to shield the measurement from other load on the "
                         "machine (default -10 as root, else 0; 0 disables)")
    ap.add_argument("--extra", action="append", default=[], metavar="NAME=CMD",
                    help="--mode http: one more L7 proxy to measure in the same run (repeatable); "
                         "{port} in CMD is the port it listens on (127.0.0.1), {upstream} the "
                         "backend's address")
    ap.add_argument("--tls-client-suites", default="", metavar="LIST",
                    help="--mode tls: the TLS clients (wrk, the s_client probes) offer only these "
                         "suites (comma-separated; TLS_* names for TLS 1.3, OpenSSL names for "
                         "TLS 1.2), so that every proxy negotiates the same one whatever its "
                         "own preference (default: OpenSSL's defaults)")
    ap.add_argument("--smoke", action="store_true",
                    help="quick CI check: 2 s runs, 10 connections (--mode bolt: 2 s runs, "
                         "default connections and pipeline)")
    a = ap.parse_args(argv)
    bolt = a.mode == "bolt"
    if a.duration is None:
        a.duration = 2 if a.smoke else 10
    if a.connections is None:
        a.connections = 32 if bolt else (10 if a.smoke else 50)
    only_given = any(x == "--only" or x.startswith("--only=")
                     for x in (argv if argv is not None else sys.argv[1:]))
    a.tests = [t.strip() for t in a.tests.split(",") if t.strip()]
    known = {t for ts in MODE_TESTS.values() for t in ts}
    if unknown := [t for t in a.tests if t not in known]:
        ap.error(f"--tests: unknown {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    only = [w.strip().lower() for w in a.only.split(",") if w.strip()]
    bad = [w for w in only if w not in PROXIES]
    if bad or not only:
        ap.error(f"--only: unknown {bad or 'empty list'}; choose from {','.join(PROXIES)}")
    a.only = [w for w in PROXIES if w in only]  # canonical order, no duplicates
    extra = []
    for spec in a.extra:
        name, sep, cmd = spec.partition("=")
        name = name.strip()
        if not sep or not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name) or not cmd.strip():
            ap.error(f"--extra {spec!r}: expected NAME=CMD with NAME of [a-z0-9_-]")
        if name in PROXIES or name == "direct" or name in dict(extra):
            ap.error(f"--extra {spec!r}: the name {name!r} is taken")
        if "{port}" not in cmd:
            ap.error(f"--extra {spec!r}: CMD must contain {{port}} (where it listens)")
        extra.append((name, cmd.strip()))
        LABEL[name] = LABEL_L7[name] = SHORT[name] = name
    if extra and a.mode != "http":
        ap.error("--extra runs in --mode http only")
    a.extra = extra
    a.only += [n for n, _ in extra]
    if a.mode == "transparent":
        a.only = ["sluice"]
    if bolt:
        # nginx and HAProxy have no Bolt support: Sluice is the only proxy of this mode.
        if only_given and a.only != ["sluice"]:
            ap.error("--mode bolt measures Sluice only (nginx and HAProxy do not speak Bolt); "
                     "drop --only or use --only sluice")
        a.only = ["sluice"]
    a.modes = list(MODES) if a.mode == "all" else [a.mode]
    if a.duration < 1 or a.connections < 1 or a.repeat < 1 or a.warmup < 0:
        ap.error("--duration, --connections and --repeat must be >= 1, --warmup >= 0")
    if a.pipeline < 1 or a.payload < 0:
        ap.error("--pipeline must be >= 1, --payload >= 0")
    if a.nice is None:
        a.nice = -10 if os.geteuid() == 0 else 0
    a.out = a.out.resolve()
    if a.tls_client_suites:
        if a.mode != "tls":
            ap.error("--tls-client-suites is for --mode tls")
        write_client_suites_conf(a.tls_client_suites, a.out / "tls-client-openssl.cnf")
    a.sluice = a.sluice.resolve() if a.sluice.exists() else a.sluice
    a.bolt_load = a.bolt_load.resolve() if a.bolt_load.exists() else a.bolt_load
    return a


def preflight(a) -> dict:
    problems = []
    l4l7 = "tcp" in a.modes or "http" in a.modes or "tls" in a.modes
    need = (["taskset"] + (["nginx", "wrk"] if l4l7 else [])
            + (["openssl"] if "tls" in a.modes else [])
            + (["iperf3"] if "tcp" in a.modes else [])
            + (["haproxy"] if "haproxy" in a.only else []))
    for tool in need:
        if not shutil.which(tool):
            problems.append(f"`{tool}` not found in PATH (Debian: apt-get install -y "
                            f"{ {'taskset': 'util-linux'}.get(tool, tool) })")
    try:
        cpus = os.sched_getaffinity(0)
    except AttributeError:
        cpus = set(range(os.cpu_count() or 1))
    if not {int(LOADGEN_CPU), int(PROXY_CPU)} <= cpus:
        problems.append(f"needs CPUs {LOADGEN_CPU} and {PROXY_CPU}; this process may use "
                        f"{sorted(cpus)}")
    versions = {}
    if "sluice" in a.only:
        b = a.sluice
        if not (b.is_file() and os.access(b, os.X_OK)):
            problems.append(
                f"Sluice binary not found (or not executable) at {b}.\n"
                f"    Build it first (`cargo build --release -p sluice-runtime` in {REPO}), pass "
                f"--sluice PATH"
                + (",\n    or compare the others only: --only nginx,haproxy"
                   if "bolt" not in a.modes else ""))
        else:
            try:
                r = subprocess.run([str(b), "--version"], capture_output=True, text=True,
                                   timeout=10)
                if r.returncode != 0:
                    problems.append(f"`{b} --version` exited with {r.returncode}: "
                                    f"{(r.stdout + r.stderr).strip()[:300]}")
                versions["sluice"] = re.sub(r"^sluice\s+", "", (r.stdout + r.stderr).strip().splitlines()[0]) \
                    if (r.stdout + r.stderr).strip() else "?"
            except (OSError, subprocess.TimeoutExpired) as e:
                problems.append(f"`{b} --version` failed: {e}")
    if "bolt" in a.modes:
        b = a.bolt_load
        if not (b.is_file() and os.access(b, os.X_OK)):
            problems.append(
                f"bolt-load binary not found (or not executable) at {b}.\n"
                f"    Build it first (`cargo build --release -p sluice-runtime -p sluice-benches` "
                f"in {REPO})\n"
                f"    or pass --bolt-load PATH (and --sluice PATH)")
    if problems:
        raise HarnessError("cannot run:\n  - " + "\n  - ".join(problems))
    if not l4l7:
        return versions
    versions["nginx"] = _version(["nginx", "-v"], r"nginx/(\S+)")
    if "haproxy" in a.only:
        versions["HAProxy"] = _version(["haproxy", "-v"], r"version (\S+)")
    versions["wrk"] = _version(["wrk", "--version"], r"wrk (\S+)")
    if "tcp" in a.modes:
        versions["iperf3"] = _version(["iperf3", "--version"], r"iperf (\S+)")
    return versions


# --------------------------------------------------------------------------------------------
# --mode transparent: capture vs explicit proxy, in network namespaces

TRANSPARENT_CONFIG = """\
admin: {{ address: 127.0.0.1:{admin} }}
upstream_mark: 1337
listeners:
  - name: outbound
    address: "0.0.0.0:15001"
    original_dst: redirect
    use_original_dst: true
    tcp_proxy: {{ cluster: passthrough }}
  - name: captured_http
    address: "0.0.0.0:{port}"
    http:
      virtual_hosts:
        - name: all
          domains: ["*"]
          routes: [ {{ match: {{ prefix: / }}, route: {{ cluster: original }} }} ]
  - name: explicit_http
    address: "127.0.0.1:{explicit}"
    http:
      virtual_hosts:
        - name: all
          domains: ["*"]
          routes: [ {{ match: {{ prefix: / }}, route: {{ cluster: server }} }} ]
clusters:
  - {{ name: passthrough, type: original_dst }}
  - {{ name: original, type: original_dst }}
  - {{ name: server, hosts: [ {{ address: "{server}:{port}" }} ] }}
"""

TRANSPARENT_BACKEND = """\
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    keepalive_requests 100000000;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    server {{
        listen {server}:{port} backlog=4096;
        location / {{ default_type text/plain; return 200 "hello\\n"; }}
    }}
}}
"""


def transparent_main(a) -> int:
    """Requests per Sluice CPU-second for HTTP captured by iptables REDIRECT (the application
    dials the server's real address; the capture listener hands the connection to an HTTP
    listener whose route goes to an `original_dst` cluster) vs the same Sluice as an explicit
    proxy (the application dials 127.0.0.1:PORT, routed to a static cluster). Everything runs
    in two network namespaces joined by a veth pair, removed at the end."""
    for tool in ("ip", "iptables", "nginx", "wrk"):
        if shutil.which(tool) is None:
            print(f"harness: --mode transparent needs {tool}", file=sys.stderr)
            return 2
    if os.geteuid() != 0:
        print("harness: --mode transparent needs root (network namespaces, iptables)",
              file=sys.stderr)
        return 2
    if not Path(a.sluice).exists():
        print(f"harness: no Sluice binary at {a.sluice} (pass --sluice PATH)", file=sys.stderr)
        return 2
    work = a.out / "work" / "transparent"
    shutil.rmtree(work, ignore_errors=True)
    (work / "backend" / "tmp").mkdir(parents=True)
    pid = os.getpid()
    app, srv = f"sluice-bench-{pid}-app", f"sluice-bench-{pid}-srv"
    app_ip, server_ip, port, explicit, admin = "10.213.0.1", "10.213.0.2", 8080, 18080, 15000

    def sh(*argv: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        full = (["ip", "netns", "exec", ns] if ns else []) + list(argv)
        r = subprocess.run(full, capture_output=True, text=True, timeout=60)
        if check and r.returncode != 0:
            raise HarnessError(f"`{shlex.join(full)}` failed: {r.stderr.strip()}")
        return r

    procs: list[subprocess.Popen] = []

    def start(name: str, argv: list[str], ns: str) -> subprocess.Popen:
        log = open(work / f"{name}.log", "w")
        p = subprocess.Popen(["ip", "netns", "exec", ns] + argv, stdout=log,
                             stderr=subprocess.STDOUT)
        procs.append(p)
        return p

    def wait_port(ns: str, host: str, p: int) -> None:
        for _ in range(200):
            if sh("bash", "-c", f"exec 3<>/dev/tcp/{host}/{p}", ns=ns, check=False).returncode == 0:
                return
            time.sleep(0.05)
        raise HarnessError(f"nothing listens on {host}:{p} in {ns}")

    def wrk(url: str, seconds: int) -> dict:
        r = sh("wrk", "-t", "1", "-c", str(a.connections), "-d", f"{seconds}s", url, ns=app)
        return parse_wrk(r.stdout)

    rows = []
    try:
        sh("ip", "netns", "add", app)
        sh("ip", "netns", "add", srv)
        sh("ip", "-n", app, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1",
           "netns", srv)
        for ns, ip_addr, dev in ((app, app_ip, "veth0"), (srv, server_ip, "veth1")):
            sh("ip", "-n", ns, "addr", "add", f"{ip_addr}/24", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        backend = work / "backend"
        (backend / "nginx.conf").write_text(TRANSPARENT_BACKEND.format(
            d=backend, server=server_ip, port=port))
        start("backend", ["nginx", "-c", str(backend / "nginx.conf"), "-p", f"{backend}/",
                          "-g", "daemon off;"], srv)
        wait_port(srv, server_ip, port)
        cfg = work / "sluice.yaml"
        cfg.write_text(TRANSPARENT_CONFIG.format(admin=admin, port=port, explicit=explicit,
                                                 server=server_ip))
        sluice = start("sluice", [str(a.sluice), "run", "-c", str(cfg), "--workers", "1",
                                  *shlex.split(a.sluice_args)], app)
        wait_port(app, "127.0.0.1", admin)
        rules = subprocess.run([str(a.sluice), "iptables", "-c", str(cfg)], capture_output=True,
                               text=True, timeout=30, check=True).stdout
        (work / "rules.sh").write_text(rules)
        sh("sh", "-c", rules, ns=app)
        # The Sluice process inside `ip netns exec`: its CPU time is the tree's. Each repeat
        # runs both paths, in alternating order (neither always gets the warmer machine).
        paths = [("explicit", f"http://127.0.0.1:{explicit}/"),
                 ("captured", f"http://{server_ip}:{port}/")]
        for run in range(a.repeat):
            for name, url in (paths if run % 2 == 0 else paths[::-1]):
                print(f"  [{run + 1}/{a.repeat}] {name} ...", flush=True)
                if a.warmup:
                    wrk(url, a.warmup)
                before = tree_cpu_ticks(sluice.pid)[0]
                t0 = time.monotonic()
                w = wrk(url, a.duration)
                cpu = (tree_cpu_ticks(sluice.pid)[0] - before) / os.sysconf("SC_CLK_TCK")
                wall = time.monotonic() - t0
                requests = w.get("requests", 0)
                if not requests or w["non_2xx"] or any(w["socket_errors"].values()):
                    raise HarnessError(f"{name}: wrk through Sluice failed: {w}")
                rows.append((run, name, requests, wall, cpu,
                             requests / cpu if cpu else float("nan")))
        # The captured run went through the capture: its connections were handed off.
        stats = sh("curl", "-sS", f"http://127.0.0.1:{admin}/stats", ns=app).stdout
        handed = re.search(r"^listener\.outbound\.capture\.handed_off: (\d+)", stats, re.M)
        if not handed or int(handed.group(1)) == 0:
            raise HarnessError("the captured run was not captured (no hand-off counted)")
    except (HarnessError, subprocess.SubprocessError, OSError) as e:
        print(f"harness: {e}", file=sys.stderr)
        return 1
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        for ns in (app, srv):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    report = transparent_report(rows, a.repeat)
    if a.smoke:
        report += "(smoke run: checks that the harness works; not a measurement)\n"
    print(report)
    (a.out / "transparent.md").write_text(report)
    return 0


def transparent_report(rows: list[tuple], repeat: int) -> str:
    """The transparent mode's report from its runs, `(run, path, requests, seconds, Sluice CPU
    s, requests per Sluice CPU-second)`: every run, then per run the ratios captured / explicit
    (per Sluice CPU-second and per second), and their medians over the runs (a ratio is taken
    within a run, where both paths saw the same machine, then the median of those)."""
    lines = ["| run | path | requests | seconds | Sluice CPU s | requests per Sluice CPU-second |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {n + 1} | {p} | {r} | {w:.1f} | {c:.2f} | {rc:.0f} |"
              for n, p, r, w, c, rc in rows]
    # The figures the benchmark is for: what capture costs against the same path explicitly.
    by = {(n, p): (r / w if w else None, rc) for n, p, r, w, _, rc in rows}
    lines += ["", "| run | explicit req per Sluice CPU-s | captured req per Sluice CPU-s | "
              "captured / explicit (per CPU-s) | (per second) |", "|---|---|---|---|---|"]
    per_cpu, per_second, exp_cpus, cap_cpus = [], [], [], []
    for n in range(repeat):
        (exp_rps, exp_cpu), (cap_rps, cap_cpu) = by[(n, "explicit")], by[(n, "captured")]
        per_cpu.append(_ratio(cap_cpu, exp_cpu))
        per_second.append(_ratio(cap_rps, exp_rps))
        exp_cpus.append(exp_cpu)
        cap_cpus.append(cap_cpu)
        lines.append(f"| {n + 1} | {exp_cpu:.0f} | {cap_cpu:.0f} | {_x(per_cpu[-1])} | "
                     f"{_x(per_second[-1])} |")
    lines.append(f"| median | {_median(exp_cpus):.0f} | {_median(cap_cpus):.0f} | "
                 f"**{_x(_median(per_cpu))}** | {_x(_median(per_second))} |")
    of = f" (median of {repeat} runs)" if repeat > 1 else ""
    lines += ["",
              f"captured / explicit, requests per Sluice CPU-second: {_x(_median(per_cpu))}{of}",
              f"captured / explicit, requests per second: {_x(_median(per_second))}{of}"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    a = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    if a.mode == "transparent":
        (a.out / "work").mkdir(parents=True, exist_ok=True)
        return transparent_main(a)
    try:
        versions = preflight(a)
    except HarnessError as e:
        print(f"harness: {e}", file=sys.stderr)
        return 2
    header = {
        # As invoked (bolt_bench.py calls main() with --mode bolt prepended).
        "command": shlex.join(["python3", *sys.argv]),
        "cwd": os.getcwd(),
        "date": _now(),
        "nproc": _version(["nproc"]),
        "cpu_model": cpu_model(),
        "kernel": platform.release(),
        "loadavg": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
        "versions": versions,
    }
    shutil.rmtree(a.out / "work", ignore_errors=True)
    (a.out / "work").mkdir(parents=True, exist_ok=True)
    if "sluice" in a.only:
        # Run a snapshot, so that a concurrent `cargo build` cannot swap the binary mid-run.
        snap = a.out / "work" / "bin" / "sluice"
        snap.parent.mkdir(parents=True)
        shutil.copy2(a.sluice, snap)
        digest = hashlib.sha256(snap.read_bytes()).hexdigest()[:16]
        header["versions"]["sluice"] += f" ({a.sluice}, sha256 {digest}…)"
        a.sluice = snap
    if "bolt" in a.modes:
        snap = a.out / "work" / "bin" / "bolt-load"
        snap.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(a.bolt_load, snap)
        digest = hashlib.sha256(snap.read_bytes()).hexdigest()[:16]
        header["versions"]["bolt-load"] = f"{a.bolt_load}, sha256 {digest}…"
        a.bolt_load = snap
    procs = Procs(nice=a.nice)
    bench = Bench(a, procs)
    print(f"harness: {', '.join(SHORT[w] for w in a.only)}, mode {'+'.join(a.modes)}; "
          f"{a.duration} s per run, {a.connections} connections"
          + (f" x pipeline {a.pipeline}, payload {a.payload} B" if "bolt" in a.modes else "")
          + f", repeat {a.repeat}; logs in {a.out / 'work'}",
          file=sys.stderr)
    status = 0
    try:
        bench.run()
    except HarnessError as e:
        print(f"harness: {e}", file=sys.stderr)
        header["incomplete"] = str(e).splitlines()[0]
        status = 1
    except (KeyboardInterrupt, Interrupted) as e:
        print(f"harness: interrupted ({e or 'SIGINT'}), stopping everything", file=sys.stderr)
        header["incomplete"] = f"interrupted ({e or 'SIGINT'})"
        status = 130
    finally:
        procs.stop_all()
        header["loadavg_end"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    if bench.runs:
        report = render_report(a, bench.runs, header)
        print(report)
        (a.out / "results.md").write_text(report)
        (a.out / "results.json").write_text(json.dumps(
            {"header": header, "args": {k: str(v) if isinstance(v, Path) else v
                                        for k, v in vars(a).items()},
             "runs": bench.runs}, indent=2, default=str))
        print(f"harness: wrote {a.out / 'results.md'} and results.json", file=sys.stderr)
    if status == 0 and any("error" in r for r in bench.runs):
        status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
