"""UDP probes for calibration: numbered, time-stamped datagrams.

    python3 -m topologies.probe recv --bind IP --port P --count N
                                     [--first-timeout S] [--idle S]
    python3 -m topologies.probe send --to IP --port P --count N
                                     --payload BYTES [--pps R]

The sender writes datagrams of --payload bytes carrying a sequence number
and its send time (CLOCK_REALTIME, ns), paced at --pps (0: as fast as it
can, a burst). It prints one JSON line: sent, first and last send time.

The receiver binds, prints "bound", and takes datagrams until it has
--count of them, or --idle seconds pass without one after the first (or
--first-timeout without any). The kernel stamps each on arrival
(SO_TIMESTAMPNS, the same clock: every Mininet host shares one kernel).
It prints one JSON line: how many arrived, how many of the --count sent
were lost and in how many runs of consecutive sequence numbers (the loss
bursts, the tail included), and the one-way delays' minimum and maximum.

iperf3 gives counts, not which datagrams were lost nor when each left;
these two give both, for the loss-burst and queue checks.
"""
import argparse
import json
import socket
import struct
import sys
import time

HEADER = struct.Struct("!QQ")      # sequence number, send time (ns)
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
RCVBUF = 1 << 22


def loss_runs(seqs, count):
    """(lost, runs) for sequence numbers `seqs` (received, any order,
    duplicates ignored) of 0..count-1 sent: frames missing and the runs of
    consecutive missing ones."""
    got = sorted(set(s for s in seqs if 0 <= s < count))
    lost = count - len(got)
    runs, expect = 0, 0
    for s in got:
        if s > expect:
            runs += 1
        expect = s + 1
    if expect < count:
        runs += 1
    return lost, runs


def receive(args):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
    s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    s.bind((args.bind, args.port))
    print("bound", flush=True)
    seqs, owd = [], []
    s.settimeout(args.first_timeout)
    try:
        while len(seqs) < args.count:
            data, anc, _, _ = s.recvmsg(65536, 64)
            if len(data) < HEADER.size:
                continue
            seq, sent = HEADER.unpack_from(data)
            arrived = None
            for level, kind, val in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    sec, nsec = struct.unpack("qq", val[:16])
                    arrived = sec * 10**9 + nsec
            if arrived is None:
                arrived = time.time_ns()
            seqs.append(seq)
            owd.append((arrived - sent) / 1000.0)
            s.settimeout(args.idle)
    except socket.timeout:
        pass
    lost, runs = loss_runs(seqs, args.count)
    print(json.dumps({
        "received": len(seqs), "count": args.count, "lost": lost,
        "loss_runs": runs, "duplicates": len(seqs) - len(set(seqs)),
        "owd_min_us": min(owd) if owd else None,
        "owd_max_us": max(owd) if owd else None}), flush=True)
    return 0


def send(args):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    pad = b"\0" * max(0, args.payload - HEADER.size)
    dst = (args.to, args.port)
    first = last = None
    t0 = time.monotonic()
    for i in range(args.count):
        if args.pps:
            wait = t0 + i / args.pps - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        last = time.time_ns()
        s.sendto(HEADER.pack(i, last) + pad, dst)
        if first is None:
            first = last
    print(json.dumps({"sent": args.count, "first_ns": first,
                      "last_ns": last,
                      "burst_us": (last - first) / 1000.0 if first else 0}),
          flush=True)
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python3 -m topologies.probe")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("recv")
    r.add_argument("--bind", default="0.0.0.0")
    r.add_argument("--port", type=int, required=True)
    r.add_argument("--count", type=int, required=True)
    r.add_argument("--first-timeout", type=float, default=10.0)
    r.add_argument("--idle", type=float, default=2.0)
    w = sub.add_parser("send")
    w.add_argument("--to", required=True)
    w.add_argument("--port", type=int, required=True)
    w.add_argument("--count", type=int, required=True)
    w.add_argument("--payload", type=int, required=True)
    w.add_argument("--pps", type=float, default=0.0)
    args = ap.parse_args(argv)
    if args.cmd == "send" and args.payload < HEADER.size:
        print(f"error: --payload must be at least {HEADER.size} bytes",
              file=sys.stderr)
        return 2
    return receive(args) if args.cmd == "recv" else send(args)


if __name__ == "__main__":
    sys.exit(main())
