#!/usr/bin/env python3
"""A QUIC-like UDP flow for scripts/bench.py: the sender batches datagrams with UDP_SEGMENT (one
sendmsg per burst, as QUIC stacks do), the receiver reads with UDP_GRO. Neither iperf3 3.12 nor
ping can produce this traffic, and it is the traffic USO exists for.

  udp_gso.py recv BIND_IP PORT SECS          prints {"bytes": N, "datagrams": N, "seconds": S}
  udp_gso.py send DST_IP PORT SECS SIZE SEGS  prints {"bytes": N, "datagrams": N, "seconds": S}

The receiver counts from its first datagram until 1 s of silence (or SECS + 5 s in all).
"""
import json
import socket
import sys
import time

SOL_UDP, UDP_SEGMENT, UDP_GRO = 17, 103, 104
SO_RCVBUFFORCE = 33  # not exported by the socket module


def recv(bind_ip: str, port: int, secs: float) -> dict:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 32 << 20)
    s.setsockopt(SOL_UDP, UDP_GRO, 1)
    s.bind((bind_ip, port))
    s.settimeout(1.0)
    print("ready", file=sys.stderr, flush=True)
    total = datagrams = 0
    first = last = None
    deadline = time.monotonic() + secs + 5
    while time.monotonic() < deadline:
        try:
            data, anc, _flags, _addr = s.recvmsg(65536, socket.CMSG_SPACE(4))
        except socket.timeout:
            if first is not None:
                break
            continue
        now = time.monotonic()
        first = first or now
        last = now
        seg = len(data)
        for level, kind, value in anc:
            if level == SOL_UDP and kind == UDP_GRO:
                seg = int.from_bytes(value[:4], sys.byteorder)
        total += len(data)
        datagrams += -(-len(data) // seg) if seg else 1
    return {"bytes": total, "datagrams": datagrams, "seconds": (last - first) if first else 0.0}


def send(dst_ip: str, port: int, secs: float, size: int, segs: int) -> dict:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(SOL_UDP, UDP_SEGMENT, size)
    s.connect((dst_ip, port))
    burst = bytes(range(256)) * (size * segs // 256 + 1)
    burst = burst[: size * segs]
    sent = 0
    start = time.monotonic()
    end = start + secs
    while time.monotonic() < end:
        try:
            sent += s.send(burst)
        except (BlockingIOError, ConnectionRefusedError, OSError):
            # ENOBUFS under pressure, or an ICMP error from an earlier datagram: keep going.
            continue
    return {"bytes": sent, "datagrams": sent // size, "seconds": time.monotonic() - start}


def main() -> None:
    mode, ip, port, secs = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    if mode == "recv":
        out = recv(ip, port, secs)
    elif mode == "send":
        out = send(ip, port, secs, int(sys.argv[5]), int(sys.argv[6]))
    else:
        sys.exit(f"udp_gso.py: unknown mode {mode!r}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
