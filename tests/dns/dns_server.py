#!/usr/bin/env python3
"""A DNS server for the end-to-end tests of DNS clusters (tests/e2e_dns.rs), standard library only.

It answers A queries for any name with the IPv4 addresses listed in ANSWERS_FILE (one per line,
read again for every query, so a test changes the answer by rewriting the file), each record with
TTL seconds; AAAA and other queries get an answer with no record (NOERROR). Every query is
appended to LOG as "TYPE NAME" so that a test can count them.

Usage: dns_server.py ADDRESS PORT ANSWERS_FILE TTL LOG
"""
import socket
import struct
import sys

address, port, answers_file, ttl, log = sys.argv[1:6]
ttl = int(ttl)
TYPES = {1: "A", 28: "AAAA"}


def question_end(msg):
    i = 12
    while msg[i] != 0:
        i += 1 + msg[i]
    return i + 1 + 4  # the root label, QTYPE, QCLASS


def name_of(msg):
    labels, i = [], 12
    while msg[i] != 0:
        labels.append(msg[i + 1:i + 1 + msg[i]].decode("ascii", "replace"))
        i += 1 + msg[i]
    return ".".join(labels)


def answer(query):
    (qid, flags) = struct.unpack("!HH", query[:4])
    end = question_end(query)
    qtype = struct.unpack("!H", query[end - 4:end - 2])[0]
    with open(log, "a") as f:
        f.write(f"{TYPES.get(qtype, qtype)} {name_of(query)}\n")
    records = b""
    count = 0
    if qtype == 1:
        with open(answers_file) as f:
            for line in f:
                line = line.strip()
                if line:
                    rdata = socket.inet_aton(line)
                    # A pointer to the question's name, A, IN, TTL, the address.
                    records += struct.pack("!HHHIH", 0xC00C, 1, 1, ttl, 4) + rdata
                    count += 1
    # QR, the query's RD, RA; NOERROR.
    reply_flags = 0x8000 | (flags & 0x0100) | 0x0080
    header = struct.pack("!HHHHHH", qid, reply_flags, 1, count, 0, 0)
    return header + query[12:end] + records


s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((address, int(port)))
print("listening", flush=True)
while True:
    query, peer = s.recvfrom(4096)
    try:
        s.sendto(answer(query), peer)
    except Exception as e:  # a malformed query: no answer
        print("bad query:", e, flush=True)
