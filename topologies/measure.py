"""ping and iperf3 between dumbbell hosts, with their output parsed.

Each function takes a built Dumbbell (dumbbell.py) and host names and
returns a plain dict that can go into a result file as it is.
"""
import json
import os
import statistics
import sys
import threading
import time

from . import tolerance

IPERF_PORT = 5201    # inside the hosts' own namespaces: always free
PROBE_PORT = 5301
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class MeasureError(Exception):
    """A measurement tool failed; one line."""


def _percentile(xs, q):
    """Nearest-rank percentile of a non-empty list."""
    s = sorted(xs)
    k = max(0, min(len(s) - 1, int(round(q / 100 * (len(s) - 1)))))
    return s[k]


def ping(db, src, dst, count=100, interval=0.02, payload=56):
    """`count` pings of `payload` bytes from src to dst every `interval` s.

    Returns sent/received counts and the RTTs in ms with min, median,
    mean, p90, max. The median is the figure to judge: it is what a
    typical small packet sees, including the emulator's and the kernel's
    timing noise (the minimum would hide an emulator that is late most of
    the time), and with jitter it still sits at the configured delay."""
    argv = ["ping", "-n", "-c", str(count), "-i", f"{interval:g}",
            "-s", str(payload), "-W", "3", db.ip(dst)]
    r = db.run(src, argv, timeout=count * interval + 30, text=True)
    rtts = []
    for line in r.stdout.splitlines():
        if "time=" in line and "icmp_seq=" in line:
            rtts.append(float(line.split("time=")[1].split()[0]))
    if not rtts:
        raise MeasureError(f"ping {src} -> {dst}: no reply "
                           f"({(r.stderr or r.stdout).strip()[-200:]})")
    return {
        "tool": "ping", "src": src, "dst": dst, "count": count,
        "interval_s": interval, "payload": payload,
        "frame_bytes": tolerance.ping_frame_bytes(payload),
        "sent": count, "received": len(rtts),
        "min_ms": min(rtts), "median_ms": statistics.median(rtts),
        "mean_ms": statistics.fmean(rtts), "p90_ms": _percentile(rtts, 90),
        "p99_ms": tolerance.percentile(rtts, 99),
        "max_ms": max(rtts), "rtt_ms": rtts,
    }


def _listening(pid, port, timeout=5.0):
    """Wait until process pid's namespace has a TCP listener on port
    (/proc/PID/net/tcp shows that process's namespace)."""
    hexport = f"{port:04X}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/net/tcp") as f:
                for line in f.readlines()[1:]:
                    parts = line.split()
                    if parts[1].endswith(":" + hexport) and parts[3] == "0A":
                        return True
        except OSError:
            return False
        time.sleep(0.02)
    return False


def iperf3(db, client, server, seconds, udp=False, bitrate=None,
           length=None, omit=0, extra=()):
    """One iperf3 test client -> server; returns the client's JSON with
    the server's own JSON inside (server_output_json)."""
    srv = db.popen(server, ["iperf3", "-s", "-1", "-4", "-p",
                            str(IPERF_PORT), "--json"])
    try:
        if not _listening(srv.pid, IPERF_PORT):
            raise MeasureError(f"iperf3 server on {server} did not start: "
                               f"{_tail(srv)}")
        argv = ["iperf3", "-c", db.ip(server), "-4", "-p", str(IPERF_PORT),
                "-t", f"{seconds:g}", "--json", "--get-server-output"]
        if udp:
            argv += ["-u"]
        if bitrate is not None:
            argv += ["-b", str(int(bitrate))]
        if length is not None:
            argv += ["-l", str(int(length))]
        if omit:
            argv += ["-O", str(omit)]
        argv += list(extra)
        r = db.run(client, argv, timeout=seconds + omit + 60, text=True)
        try:
            out = json.loads(r.stdout)
        except ValueError:
            raise MeasureError(f"iperf3 {client} -> {server}: no JSON "
                               f"({(r.stderr or r.stdout).strip()[-200:]})")
        if out.get("error"):
            raise MeasureError(f"iperf3 {client} -> {server}: "
                               f"{out['error']}")
        return out
    finally:
        if srv.poll() is None:
            try:
                srv.wait(timeout=5)
            except Exception:
                srv.kill()
                srv.wait()


def _tail(p):
    if p.poll() is None:
        p.kill()
    try:
        _, err = p.communicate(timeout=2)
        return (err or b"").decode(errors="replace").strip()[-200:]
    except Exception:
        return "?"


def udp_counters(db, name):
    """The kernel's UDP counters in host `name`'s namespace."""
    with open(f"/proc/{db.host(name).pid}/net/snmp") as f:
        rows = [ln.split() for ln in f if ln.startswith("Udp:")]
    return dict(zip(rows[0][1:], map(int, rows[1][1:])))


def udp(db, client, server, frame_bps, payload, seconds, skip_s=1.0,
        rcvbuf="4M"):
    """UDP at frame_bps (counted in whole Ethernet frames of a `payload`
    datagram) from client to server.

    Returns sent/lost datagram counts (for loss) and the delivery rate
    in frames over the server's intervals from skip_s to the end minus
    one interval (the steady state: no start-up, no drain). The socket
    buffers are `rcvbuf` (iperf3 -w), so a receiver starved of CPU for a
    moment does not drop datagrams the link delivered; the receiving
    kernel's own drop counters are returned to show it did not."""
    frame = tolerance.udp_frame_bytes(payload)
    payload_bps = frame_bps * payload / frame
    before = udp_counters(db, server)
    out = iperf3(db, client, server, seconds, udp=True, bitrate=payload_bps,
                 length=payload, extra=["-w", rcvbuf] if rcvbuf else [])
    after = udp_counters(db, server)
    recv = out["end"]["sum_received"]
    sent = out["end"]["sum_sent"]
    ivs = [iv["sum"] for iv in out["server_output_json"]["intervals"]]
    window = [iv for iv in ivs[:-1] if iv["start"] >= skip_s - 1e-3]
    if not window:
        window = ivs
    wbytes = sum(iv["bytes"] for iv in window)
    wsecs = sum(iv["seconds"] for iv in window)
    payload_rate = wbytes * 8 / wsecs if wsecs > 0 else 0.0
    return {
        "tool": "iperf3 udp", "src": client, "dst": server,
        "payload": payload, "frame_bytes": frame,
        "offered_frame_bps": frame_bps, "seconds": seconds,
        "datagrams": recv["packets"], "lost": recv["lost_packets"],
        "sent_bytes": sent["bytes"],
        "window_s": wsecs, "window_bytes": wbytes,
        "delivered_payload_bps": payload_rate,
        "delivered_frame_bps": tolerance.frame_rate(payload_rate, payload),
        "jitter_ms": recv.get("jitter_ms"),
        "receiver_rcvbuf": out["server_output_json"]["start"].get(
            "rcvbuf_actual"),
        "receiver_drops": {k: after[k] - before[k] for k in
                           ("RcvbufErrors", "InErrors", "MemErrors")
                           if k in after and k in before},
    }


def _probe_argv(*args):
    return [sys.executable, "-m", "topologies.probe", *args]


def probe_start(db, src, dst, count, payload, pps=0.0, port=PROBE_PORT,
                idle=2.0):
    """Start numbered datagrams src -> dst (topologies/probe.py): the
    receiver, once bound, then the sender. Returns (receiver, sender)
    processes; probe_finish() collects them. Several may run at once on
    different hosts or ports."""
    rcv = db.popen(dst, _probe_argv("recv", "--bind", db.ip(dst), "--port",
                                    str(port), "--count", str(count),
                                    "--idle", f"{idle:g}"), cwd=REPO)
    line = rcv.stdout.readline()
    if line.strip() != b"bound":
        raise MeasureError(f"probe receiver on {dst} did not start: "
                           f"{_tail(rcv)}")
    snd = db.popen(src, _probe_argv("send", "--to", db.ip(dst), "--port",
                                    str(port), "--count", str(count),
                                    "--payload", str(payload), "--pps",
                                    f"{pps:g}"), cwd=REPO)
    return rcv, snd


def probe_finish(pair, timeout):
    """The merged results of a probe_start() pair: what the sender sent
    and the receiver got (probe.py's JSON lines), plus who and what."""
    rcv, snd = pair
    out = {}
    for p, who in ((snd, "sender"), (rcv, "receiver")):
        try:
            stdout, stderr = p.communicate(timeout=timeout)
        except Exception:
            p.kill()
            p.communicate()
            raise MeasureError(f"probe {who} did not finish in "
                               f"{timeout:g} s") from None
        try:
            out.update(json.loads(stdout.decode().strip().splitlines()[-1]))
        except (ValueError, IndexError):
            raise MeasureError(f"probe {who} failed: "
                               f"{stderr.decode(errors='replace')[-200:]}")
    return out


def probe(db, src, dst, count, payload, pps=0.0, port=PROBE_PORT,
          idle=2.0, timeout=None):
    """probe_start() then probe_finish(): numbered datagrams src -> dst."""
    if timeout is None:
        timeout = (count / pps if pps else 0) + idle + 60
    res = probe_finish(probe_start(db, src, dst, count, payload, pps, port,
                                   idle), timeout)
    res.update({"tool": "probe", "src": src, "dst": dst,
                "payload": payload,
                "frame_bytes": tolerance.udp_frame_bytes(payload),
                "pps": pps})
    return res


TCP_FRAME_OVERHEAD = 14 + 20 + 32   # Ethernet, IPv4, TCP with timestamps


def rx_counters(db, name, dev=None):
    """(bytes, packets) host `name` has received on its interface."""
    dev = dev or f"{name}-eth0"
    with open(f"/proc/{db.host(name).pid}/net/dev") as f:
        for line in f:
            if line.strip().startswith(dev + ":"):
                v = line.split(":", 1)[1].split()
                return int(v[0]), int(v[1])
    raise MeasureError(f"{name} has no interface {dev}")


def tcp(db, client, server, seconds, omit=1):
    """TCP goodput client -> server (iperf3 for omit + seconds).

    goodput_bps comes from the receiving interface's own counters over
    the steady state (from 1 s after the omitted start to 0.5 s before
    the end): frames received less their Ethernet, IPv4 and TCP headers,
    per second. iperf3's own figure is kept beside it: its receiver
    counts bytes by when its application read them, and on slow links
    (a segment every 70 ms) its intervals held up to 13 % more than the
    link can carry in that time."""
    t_start = time.monotonic()
    samples = {}

    def sample(at, key):
        delay = t_start + at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        samples[key] = (time.monotonic(), rx_counters(db, server))

    window = (omit + 1.0, omit + seconds - 0.5)
    sampler = None
    if window[1] - window[0] >= 1.0:
        def run():
            sample(window[0], "from")
            sample(window[1], "to")
        sampler = threading.Thread(target=run, daemon=True)
        sampler.start()
    out = iperf3(db, client, server, seconds, omit=omit)
    if sampler is not None:
        sampler.join(timeout=seconds + omit + 5)
    recv = out["end"]["sum_received"]
    sent = out["end"]["sum_sent"]
    # iperf3's receiver intervals, without the omitted ones, the first
    # after them and the last (a fraction of a second of queue drain).
    ivs = [iv["sum"] for iv in out["server_output_json"]["intervals"]
           if not iv["sum"].get("omitted")]
    iwin = ivs[1:-1] or ivs
    isecs = sum(iv["seconds"] for iv in iwin)
    iperf_bps = sum(iv["bytes"] for iv in iwin) * 8 / isecs if isecs else 0
    goodput, wsecs, frames = None, None, None
    if "from" in samples and "to" in samples:
        (t0, (b0, p0)), (t1, (b1, p1)) = samples["from"], samples["to"]
        wsecs, frames = t1 - t0, p1 - p0
        goodput = ((b1 - b0) - frames * TCP_FRAME_OVERHEAD) * 8 / wsecs
    return {
        "tool": "iperf3 tcp", "src": client, "dst": server,
        "seconds": seconds, "omit_s": omit,
        "goodput_bps": goodput if goodput is not None else iperf_bps,
        "goodput_from": "interface counters" if goodput is not None
        else "iperf3 intervals",
        "window_s": wsecs, "frames": frames,
        "iperf3_window_bps": iperf_bps,
        "iperf3_receiver_bps": recv["bits_per_second"],
        "bytes": recv["bytes"], "retransmits": sent.get("retransmits"),
        "congestion": out["end"].get("sender_tcp_congestion"),
    }


def tool_versions():
    """Versions of the measuring tools, for the results' metadata."""
    import subprocess
    v = {}
    for name, argv in (("iperf3", ["iperf3", "--version"]),
                       ("ping", ["ping", "-V"])):
        try:
            r = subprocess.run(argv, capture_output=True, text=True,
                               timeout=5)
            v[name] = (r.stdout or r.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            v[name] = None
    v["kernel"] = os.uname().release
    return v
