"""`make footprint`: the storage footprint of each side, measured the way
the dissertation measured its Table 3.1 (binary size as `ls` reports it,
plus the external libraries, such as the TLS library, that a device must
also carry): here the size of each stripped binary and of every shared
library it pulls in (ldd, so indirect ones too) beyond the C library
(glibc's own libraries are left out: every device has them), each library
stripped as well, counted once per side.

  client side  loadgen (the benchmark's MQTT client: TCP, TLS and QUIC in
               one binary; sink is the same client with another role)
  server side  mosquitto (TCP and TLS), plus the QUIC gateway for QUIC

Writes results/footprint-<time>/footprint.{json,md} and prints the table.
"""
import datetime
import os
import re
import shutil
import subprocess
import sys
import tempfile

from topologies.state import atomic_write

from . import results
from .transports import QUIC_GATEWAY

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GLIBC = re.compile(r"^(linux-vdso|ld-linux[^/]*|libc|libm|libpthread|libdl|"
                   r"librt|libresolv|libutil|libanl|libmvec)\.so")
MIB = 1024 * 1024


def stripped_size(path):
    """Bytes of path after `strip --strip-all` (on a copy)."""
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "s")
        r = subprocess.run(["strip", "--strip-all", "-o", out, path],
                           capture_output=True, text=True)
        if r.returncode != 0:
            return os.path.getsize(path)
        return os.path.getsize(out)


def libraries(path):
    """{soname: resolved path} of the shared libraries path needs,
    glibc's apart."""
    r = subprocess.run(["ldd", path], capture_output=True, text=True)
    libs = {}
    for line in r.stdout.splitlines():
        m = re.match(r"\s*(\S+)\s+=>\s+(\S+)", line)
        if m and not GLIBC.match(m.group(1)):
            libs[m.group(1)] = os.path.realpath(m.group(2))
    return libs


def measure(binaries):
    """A side made of these binaries: each one's stripped size, the union
    of their libraries with stripped sizes, and the total."""
    bins, libs = [], {}
    for path in binaries:
        bins.append({"binary": os.path.basename(path), "path": path,
                     "bytes": os.path.getsize(path),
                     "stripped_bytes": stripped_size(path)})
        libs.update(libraries(path))
    lib_rows = [{"soname": s, "path": p, "stripped_bytes": stripped_size(p)}
                for s, p in sorted(libs.items())]
    total = sum(b["stripped_bytes"] for b in bins) + \
        sum(l["stripped_bytes"] for l in lib_rows)
    return {"binaries": bins, "libraries": lib_rows, "total_bytes": total}


def mib(b):
    return f"{b / MIB:.2f}"


def main(argv):
    bindir = os.environ.get("BENCH_BIN") or os.path.join(REPO, "build",
                                                         "release", "bin")
    loadgen = os.path.join(bindir, "loadgen")
    mosq = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    for p in (loadgen, mosq):
        if not os.access(p, os.X_OK):
            print(f"error: {p} is missing (make; make deps)",
                  file=sys.stderr)
            return 1
    if shutil.which("strip") is None or shutil.which("ldd") is None:
        print("error: strip and ldd are needed (binutils, libc-bin)",
              file=sys.stderr)
        return 1
    gw = QUIC_GATEWAY.path(bindir)
    have_gw = os.access(gw, os.X_OK)
    stacks = [
        {"stack": "MQTT over TCP and TLS", "client": [loadgen],
         "server": [mosq], "tls": "GnuTLS (client), OpenSSL (server)"},
        {"stack": "MQTT over QUIC", "client": [loadgen],
         "server": [gw, mosq] if have_gw else None,
         "tls": "GnuTLS through ngtcp2's crypto library"},
    ]
    doc = {"measured": results.iso_now(), "method": __doc__.strip(),
           "stacks": []}
    for s in stacks:
        c = measure(s["client"])
        sv = measure(s["server"]) if s["server"] else None
        doc["stacks"].append({"stack": s["stack"], "tls": s["tls"],
                              "client": c, "server": sv})
    lines = ["| stack | language | footprint client (MiB) | footprint "
             "server (MiB) | TLS |", "| --- | --- | ---: | ---: | --- |"]
    for s in doc["stacks"]:
        sv = mib(s["server"]["total_bytes"]) if s["server"] else \
            "not built yet (gateway)"
        lines.append(f"| {s['stack']} | C | {mib(s['client']['total_bytes'])}"
                     f" | {sv} | {s['tls']} |")
    lines += ["", "| side | binary or library | stripped (MiB) |",
              "| --- | --- | ---: |"]
    for s in doc["stacks"]:
        for side in ("client", "server"):
            m = s[side]
            if not m:
                continue
            for b in m["binaries"]:
                lines.append(f"| {s['stack']}, {side} | {b['binary']} | "
                             f"{mib(b['stripped_bytes'])} |")
            for l in m["libraries"]:
                lines.append(f"| {s['stack']}, {side} | {l['soname']} | "
                             f"{mib(l['stripped_bytes'])} |")
    text = "\n".join(lines) + "\n"
    note = ("Sizes as the dissertation's Table 3.1 measures them: stripped "
            "binaries plus the shared libraries they pull in beyond glibc "
            "(ldd, indirect ones included; each counted once per side). "
            "For comparison, its Table 3.1 gives ngtcp2 3.4 MiB (client) "
            "and 4.3 MiB (server) with OpenSSL. loadgen is a benchmark "
            "client with every transport built in, not a minimal one.\n")
    out_dir = os.path.join(REPO, "results", "footprint-" +
                           datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
    os.makedirs(out_dir, exist_ok=True)
    results.atomic_json(os.path.join(out_dir, "footprint.json"), doc)
    atomic_write(os.path.join(out_dir, "footprint.md"), note + "\n" + text)
    print(note)
    print(text, end="")
    print(f"\nwritten: {out_dir}/footprint.{{md,json}}")
    return 0
