#!/usr/bin/python3
"""Lookups in a loop against the epmd on 127.0.0.1:4369 and [::1]:4369, counting failures.

    lookups.py STOPFILE OUTFILE NAME=PORT...

Each lookup is a new TCP connection with one PORT_PLEASE2_REQ, alternating IPv4 and IPv6
and the names; it fails when the connection or the answer fails, or when the answer is not
the expected port. Runs until STOPFILE exists, then writes "ok failed slowest_ms" and up to
five failure reasons to OUTFILE.
"""
import os
import socket
import struct
import sys
import time

stop, out = sys.argv[1], sys.argv[2]
names = [(n.encode(), int(p)) for n, p in (a.split("=") for a in sys.argv[3:])]
addrs = [("127.0.0.1", socket.AF_INET), ("::1", socket.AF_INET6)]


def lookup(addr, family, name):
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(20)
        s.connect((addr, 4369))
        s.sendall(struct.pack(">HB", len(name) + 1, 122) + name)
        data = b""
        while len(data) < 4:
            d = s.recv(64)
            if not d:
                break
            data += d
    if len(data) < 4 or data[0] != 119 or data[1] != 0:
        raise RuntimeError(f"answer {data[:8].hex()}")
    return struct.unpack(">H", data[2:4])[0]


ok = failed = 0
slowest = 0.0
reasons = []
i = 0
while not os.path.exists(stop):
    addr, family = addrs[i % 2]
    name, port = names[i % len(names)]
    i += 1
    t0 = time.monotonic()
    try:
        got = lookup(addr, family, name)
        if got != port:
            raise RuntimeError(f"port {got}, not {port}")
        ok += 1
    except Exception as e:  # every failure is counted, whatever it is
        failed += 1
        if len(reasons) < 5:
            reasons.append(f"{time.strftime('%T')} {addr} {name.decode()}: {e!r}")
    slowest = max(slowest, time.monotonic() - t0)
    time.sleep(0.005)
with open(out + ".tmp", "w") as f:
    f.write(f"{ok} {failed} {slowest * 1000:.0f}\n")
    for r in reasons:
        f.write(r + "\n")
os.rename(out + ".tmp", out)
