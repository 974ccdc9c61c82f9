"""Transports: the one place where tcp, tls and quic are defined.

A transport says
  - which port on the broker host its clients connect to,
  - which loadgen/sink options select it (client_args),
  - what must run on the broker host besides Mosquitto (a Gateway), and
  - whether a TLS key log (SSLKEYLOGFILE) means anything for it.

tcp and tls are Mosquitto's own listeners (runner/mosquitto.py). quic
reaches the same Mosquitto through the project's QUIC gateway on the
broker host (DESIGN.md): UDP 14567, ALPN "mqtt", one stream per MQTT
session, relayed to 127.0.0.1:1883 over TCP with TCP_NODELAY like the
broker's own sockets.

The QUIC transport is this file only: QUIC_GATEWAY names the gateway's
binary in $BENCH_BIN and Gateway.argv() its command line (listen address
and port, broker, certificate and key, JSON statistics, ready file);
nothing else in the runner knows about QUIC. Where the binary is not
built, every quic cell fails at once with "not built yet", is recorded as
failed, and the run goes on. Another transport with a gateway of its own
is one more Gateway and one more TRANSPORTS entry.
"""
import dataclasses
import os

BROKER_NAME = "broker"      # the certificate's DNS name and the TLS SNI


class TransportUnavailable(Exception):
    """One line: this transport cannot run here (yet)."""


@dataclasses.dataclass(frozen=True)
class Gateway:
    """A server that runs on the broker host in front of Mosquitto."""
    name: str
    binary: str                 # file name in $BENCH_BIN
    built_by: str               # what builds it, for the "not built" line

    def path(self, bindir):
        return os.path.join(bindir, self.binary)

    def check(self, bindir):
        p = self.path(bindir)
        if not os.access(p, os.X_OK):
            raise TransportUnavailable(
                f"not built yet: the {self.name} ({p}) is missing; "
                f"{self.built_by}")

    def argv(self, bindir, listen_port, broker_port, certs, json_path,
             ready_path):
        """The gateway's command line (checked against its --help before
        a cell starts). Its broker-side sockets keep TCP_NODELAY, its
        default, like Mosquitto's own (set_tcp_nodelay true)."""
        return [self.path(bindir),
                "--listen", "0.0.0.0", "--port", str(listen_port),
                "--broker", "127.0.0.1", "--broker-port", str(broker_port),
                "--cert", certs["broker"], "--key", certs["broker_key"],
                "--json", json_path, "--ready-file", ready_path]


QUIC_GATEWAY = Gateway(
    name="QUIC gateway", binary="gateway",
    built_by="`make` builds it (bench/cmd/gateway.c); until then quic "
             "cells fail and the run goes on")


@dataclasses.dataclass(frozen=True)
class Transport:
    name: str
    port: int                   # on the broker host
    protocol: str               # "tcp" or "udp", for the capture filter
    secure: bool                # verifies the broker's certificate
    listener: str               # the Mosquitto listener it reaches:
                                # "tcp" or "tls"
    gateway: Gateway = None
    description: str = ""

    def client_args(self, certs):
        """loadgen/sink options selecting this transport (host apart)."""
        args = ["--transport", self.name, "--port", str(self.port)]
        if self.secure:
            args += ["--cafile", certs["ca"], "--tls-name", BROKER_NAME]
        return args

    def check(self, bindir):
        """Raise TransportUnavailable if this transport cannot run."""
        if self.gateway:
            self.gateway.check(bindir)

    def to_dict(self):
        return {"name": self.name, "port": self.port,
                "protocol": self.protocol, "secure": self.secure,
                "broker_listener": self.listener,
                "gateway": self.gateway.binary if self.gateway else None,
                "description": self.description}


TRANSPORTS = {
    "tcp": Transport("tcp", 1883, "tcp", False, "tcp",
                     description="MQTT over TCP, Mosquitto's listener"),
    "tls": Transport("tls", 8883, "tcp", True, "tls",
                     description="MQTT over TLS (1.3 by the clients' "
                                 "default) over TCP, Mosquitto's listener"),
    "quic": Transport("quic", 14567, "udp", True, "tcp",
                      gateway=QUIC_GATEWAY,
                      description="MQTT over QUIC (ALPN mqtt, one stream "
                                  "per session) via the project's gateway "
                                  "relaying to Mosquitto's TCP listener"),
}
NAMES = tuple(TRANSPORTS)
BROKER_PORTS = {"tcp": 1883, "tls": 8883}


# Congestion control: one algorithm for every transport of a run, chosen
# on purpose (the VM's default may be anything: bbr on the development
# VM while ngtcp2 defaults to cubic). TCP's is set on every route of
# every host namespace (topologies/dumbbell.py, congestion_control);
# QUIC's is passed to every endpoint (--cc).
QUIC_CC = ("cubic", "reno", "bbr", "bbr2")
DEFAULT_CC = "cubic"
TCP_CC_AVAILABLE = "/proc/sys/net/ipv4/tcp_available_congestion_control"


def tcp_cc_available():
    try:
        with open(TCP_CC_AVAILABLE) as f:
            return f.read().split()
    except OSError:
        return []


def check_cc(name):
    """name if both this kernel's TCP and our QUIC offer it, else
    ValueError with one line saying what to pick."""
    tcp = tcp_cc_available()
    both = [c for c in QUIC_CC if c in tcp]
    if name not in QUIC_CC:
        raise ValueError(f"CCA: {name!r} is not a congestion control QUIC "
                         f"offers here (both TCP and QUIC have: "
                         f"{', '.join(both) or 'none'})")
    if name not in tcp:
        raise ValueError(f"CCA={name}: this kernel's TCP does not offer it "
                         f"(it has: {' '.join(tcp) or 'nothing readable'});"
                         f" pick one of {', '.join(both) or 'none'}")
    return name


def get(name):
    try:
        return TRANSPORTS[name]
    except KeyError:
        raise ValueError(f"unknown transport {name!r} (known: "
                         f"{', '.join(NAMES)})") from None
