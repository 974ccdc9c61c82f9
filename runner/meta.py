"""What produced a run: versions of every component, the machine, the
kernel, the link backend, the project's commit. Stored in run.json and
summary.json; each cell adds its own (topology, seeds, broker config, TCP
settings per host, contention)."""
import os
import platform
import subprocess
import sys

from topologies import backends

from . import mosquitto
from . import transports as tr

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _out(argv, cwd=None):
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10,
                           cwd=cwd)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (r.stdout or r.stderr).strip()
    return text.splitlines()[0] if text and r.returncode == 0 else None


def git():
    commit = _out(["git", "rev-parse", "HEAD"], cwd=REPO)
    status = None
    try:
        r = subprocess.run(["git", "status", "--porcelain",
                            "--untracked-files=no"], capture_output=True,
                           text=True, timeout=10, cwd=REPO)
        status = r.stdout if r.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        pass
    return {"commit": commit,
            "branch": _out(["git", "rev-parse", "--abbrev-ref", "HEAD"],
                           cwd=REPO),
            "dirty": bool(status) if status is not None else None,
            "changed_files": status.split("\n")[:-1] if status else []}


def line_value(path, prefix, sep=":"):
    """The text after sep on the first line of path starting with prefix
    (/proc and /etc files), stripped; None if there is none."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(prefix):
                    return line.split(sep, 1)[1].strip()
    except (OSError, IndexError):
        pass
    return None


def _mem_kib():
    v = line_value("/proc/meminfo", "MemTotal:")
    return int(v.split()[0]) if v else None


def versions(bindir):
    v = {t: _out([os.path.join(bindir, t), "--version"])
         for t in ("loadgen", "sink", "linkem")}
    gw = tr.QUIC_GATEWAY.path(bindir)
    v["gateway"] = _out([gw, "--version"]) if os.access(gw, os.X_OK) \
        else None
    v["mosquitto"] = mosquitto.version()
    v["certtool"] = _out(["certtool", "--version"])
    v["gnuplot"] = _out(["gnuplot", "--version"])
    v["tcpdump"] = _out(["tcpdump", "--version"])
    v["python"] = platform.python_version()
    try:
        from mininet.net import VERSION
        v["mininet"] = VERSION
    except ImportError:
        v["mininet"] = None
    return v


def collect(bindir, backend):
    try:
        chosen, note = backends.choose_backend(backend)
    except backends.BackendError as e:
        chosen, note = None, str(e)
    u = os.uname()
    return {"host": {"hostname": u.nodename, "kernel": u.release,
                     "kernel_version": u.version, "machine": u.machine,
                     "os": (line_value("/etc/os-release", "PRETTY_NAME=", "=")
                            or "").strip('"') or None,
                     "cpu_model": line_value("/proc/cpuinfo", "model name"),
                     "cpus": os.cpu_count(), "mem_total_kib": _mem_kib()},
            "versions": versions(bindir),
            "git": git(),
            "link_backend": {"requested": backend, "chosen": chosen,
                             "note": note},
            "transports": {n: t.to_dict() for n, t in
                           tr.TRANSPORTS.items()},
            "python_executable": sys.executable,
            "bindir": bindir}
