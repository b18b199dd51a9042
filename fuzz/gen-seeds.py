#!/usr/bin/env python3
"""Writes the seed corpora of the structured targets (tcp_session, balancer).

Each seed is a fixed byte string that `arbitrary` 1.x decodes into a meaningful scenario (the
happy path, failover, no healthy host, ...), so that fuzzing starts from inputs that already
reach deep into the state machines. The encoder below mirrors how `arbitrary` 1.x reads bytes:

- integers: little-endian, as many bytes as the type is wide;
- bool: one byte, `b & 1`;
- Option<T>: a bool, then T when it is true;
- Vec<T>: before each element a bool "one more", false (or no data) ends it;
- enum (derived): a u32 `x`, the variant is `(x * variant_count) >> 32`; then its fields;
- struct (derived): its fields in order.

The seeds are committed; run this again only after changing an input type of a target
(`python3 gen-seeds.py` from fuzz/), and check the result with
`cargo fuzz run --sanitizer none TARGET corpus/TARGET -- -runs=0`.
"""

import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def u8(v):
    return struct.pack("<B", v)


def u16(v):
    return struct.pack("<H", v)


def u64(v):
    return struct.pack("<Q", v)


def boolean(v):
    return u8(1 if v else 0)


def option(v, enc):
    return boolean(False) if v is None else boolean(True) + enc(v)


def vec(items, enc):
    return b"".join(boolean(True) + enc(i) for i in items) + boolean(False)


def variant(index, count):
    # The smallest x with (x * count) >> 32 == index.
    return struct.pack("<I", -(-(index << 32) // count))


# ---- tcp_session ----

POLICIES = ["round_robin", "weighted_round_robin", "random", "least_request"]
EVENTS = ["connected", "connect_failed", "read", "error", "advance", "drain", "set_available"]


def event(e):
    kind, *args = e
    tag = variant(EVENTS.index(kind), len(EVENTS))
    if kind in ("connected", "drain"):
        return tag
    if kind == "connect_failed":
        (timeout,) = args
        return tag + boolean(timeout)
    if kind == "read":
        downstream, n = args
        return tag + boolean(downstream) + u16(n)
    if kind == "error":
        (downstream,) = args
        return tag + boolean(downstream)
    if kind == "advance":
        (ms,) = args
        return tag + u16(ms)
    if kind == "set_available":
        host, available = args
        return tag + u8(host) + boolean(available)
    raise ValueError(kind)


def tcp_session(hosts, policy, attempts, events, weights=(1, 1, 1, 1), connect_ms=1000,
                idle_ms=10_000, unavailable=0, seed=1):
    return (
        u8(hosts - 1)
        + bytes(w - 1 for w in weights)
        + variant(POLICIES.index(policy), len(POLICIES))
        + u8(attempts - 1)
        + u16(connect_ms - 1)
        + option(None if idle_ms is None else idle_ms - 1, u16)
        + u8(unavailable)
        + u64(seed)
        + vec(events, event)
    )


TCP_SESSION = {
    "happy_path": tcp_session(3, "round_robin", 3, [
        ("connected",), ("read", True, 100), ("read", False, 40),
        ("read", True, 0), ("read", False, 0),
    ]),
    "half_close_upstream_first": tcp_session(2, "random", 1, [
        ("connected",), ("read", False, 4000), ("read", False, 0),
        ("advance", 500), ("read", True, 10), ("read", True, 0),
    ], seed=7),
    "failover_refused_then_timeout": tcp_session(3, "round_robin", 3, [
        ("connect_failed", False), ("advance", 999), ("advance", 1),
        ("connect_failed", False),
    ]),
    "no_healthy_upstream": tcp_session(2, "round_robin", 3, [], unavailable=0b11),
    "idle_timeout_moves": tcp_session(1, "least_request", 1, [
        ("connected",), ("advance", 6000), ("read", False, 1),
        ("advance", 4000), ("advance", 6000),
    ]),
    "reset_and_drain": tcp_session(2, "weighted_round_robin", 2, [
        ("connected",), ("read", True, 1), ("error", True), ("drain",), ("error", False),
    ], weights=(5, 1, 1, 1)),
    "hosts_flap_during_failover": tcp_session(4, "least_request", 10, [
        ("set_available", 0, False), ("connect_failed", True),
        ("set_available", 1, False), ("connect_failed", False),
        ("set_available", 2, False), ("set_available", 3, False),
        ("connect_failed", False), ("set_available", 0, True),
        ("connect_failed", True), ("connected",), ("drain",),
    ], weights=(3, 1, 200, 2), idle_ms=None, seed=42),
}

# ---- balancer ----

OPS = ["pick", "run", "set_available", "set_active", "set_weight"]


def op(o):
    kind, *args = o
    tag = variant(OPS.index(kind), len(OPS))
    if kind == "pick":
        (exclude,) = args
        return tag + vec(exclude, u8)
    if kind == "run":
        (k,) = args
        return tag + u8(k)
    if kind == "set_available":
        host, available = args
        return tag + u8(host) + boolean(available)
    if kind in ("set_active", "set_weight"):
        host, value = args
        return tag + u8(host) + u16(value - 1 if kind == "set_weight" else value)
    raise ValueError(kind)


def host(h):
    weight, available, active = h
    return u16(weight - 1) + boolean(available) + u16(active)


def balancer(policy, hosts, ops, seed=1):
    return (
        variant(POLICIES.index(policy), len(POLICIES))
        + u64(seed)
        + vec(hosts, host)
        + vec(ops, op)
    )


BALANCER = {
    "round_robin_3": balancer("round_robin", [(1, True, 0)] * 3, [
        ("run", 0), ("pick", [0]), ("set_available", 1, False), ("run", 0),
        ("pick", [0, 2]), ("pick", [0, 1, 2, 200]),
    ]),
    "weighted_round_robin_5_1_1": balancer("weighted_round_robin",
                                           [(5, True, 0), (1, True, 0), (1, True, 0)], [
        ("run", 7), ("set_weight", 1, 1000), ("pick", []), ("set_available", 0, False),
        ("run", 20), ("pick", [1]),
    ]),
    "random_16": balancer("random", [(i % 7 + 1, i % 3 != 0, 0) for i in range(16)], [
        ("pick", []), ("pick", [1, 2, 4, 5]), ("run", 31), ("set_available", 3, True),
        ("pick", [3]),
    ], seed=99),
    "least_request_4": balancer("least_request",
                                [(1, True, 10), (2, True, 10), (1, True, 0), (1000, False, 0)], [
        ("run", 8), ("set_active", 2, 65535), ("set_available", 3, True), ("pick", [3]),
        ("set_weight", 0, 1000), ("run", 4),
    ], seed=3),
    "none_available": balancer("least_request", [(1, False, 0), (2, False, 1)], [
        ("pick", []), ("pick", [0, 1]), ("run", 3), ("set_available", 1, True), ("pick", [1]),
    ]),
    "no_hosts": balancer("round_robin", [], [("pick", []), ("run", 2)]),
}


def write(target, seeds):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
    print(f"{target}: {len(seeds)} seeds in {d}")


if __name__ == "__main__":
    write("tcp_session", TCP_SESSION)
    write("balancer", BALANCER)
