"""Offloads off: every frame an emulated link sees is a wire frame.

A link emulator counts, queues and serialises frames. Offloads let the
kernel hand it something else: segmentation offloads (TSO, GSO, UFO,
tx-udp-segmentation, tx-gso-list) let a socket build one 64 kB packet
that a qdisc such as netem takes as one frame and the device splits only
later; receive offloads (GRO, LRO, rx-gro-list, rx-udp-gro-forwarding)
merge frames on the way in. Turning off GSO on a device is not enough:
TCP builds multi-segment packets whatever the device says and segments
them in software after the qdisc, and an application may ask for UDP
segmentation (UDP_SEGMENT) itself. So on every emulated interface:

  - every such offload is turned off where the device lets it be;
  - gso_max_segs is 1, so no socket builds a packet of more than one
    segment for a device on the path;
  - transmit checksumming is off: the kernel then cuts a UDP_SEGMENT
    send into datagrams at the socket (measured at the egress of a host's
    interface, where a netem qdisc would see them: 14042-byte packets
    with it on, 1442-byte ones with it off; gso_max_segs does not stop
    these).

Then it reads the settings back and fails if any is still on. The
userspace backend's TAP devices would segment anything before linkem
reads it anyway; linkem counts frames above the MTU (frames_above_mtu)
and the topology tests check it stays 0.
"""
import json
import re

# ethtool -k prints some features under legacy names; -K takes these
# short names for them.
LEGACY = {
    "tcp-segmentation-offload": "tso",
    "generic-segmentation-offload": "gso",
    "generic-receive-offload": "gro",
    "large-receive-offload": "lro",
    "udp-fragmentation-offload": "ufo",
    "tx-checksumming": "tx",
}
# Kernel feature names (ethtool -k prints them as they are) that build or
# merge packets: any transmit segmentation, GSO lists, receive
# aggregation.
FEATURE_RE = re.compile(r"^(tx-[a-z0-9_-]*segmentation|tx-gso-[a-z-]+|"
                        r"rx-gro[a-z-]*|rx-udp-gro-forwarding|rx-lro)$")
GSO_MAX_SEGS = 1


class OffloadError(Exception):
    """An offload could not be turned off; one line."""


def parse_features(text):
    """ethtool -k output -> {name: (on, fixed)}."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"^\s*([A-Za-z0-9_-]+): (on|off)( \[fixed\])?", line)
        if m:
            out[m.group(1)] = (m.group(2) == "on", bool(m.group(3)))
    return out


def to_turn_off(features):
    """The features of `features` (parse_features) to switch off, as
    ethtool -K names, in a stable order: those present and changeable."""
    names = []
    for name, (_, fixed) in features.items():
        if fixed:
            continue
        if name in LEGACY:
            names.append(LEGACY[name])
        elif FEATURE_RE.match(name):
            names.append(name)
    return names


def still_on(features):
    """Names of merging offloads that are on, fixed or not."""
    return [n for n, (on, _) in features.items()
            if on and (n in LEGACY or FEATURE_RE.match(n))]


def turn_off(dev, run):
    """Switch every merging offload of dev off and cap gso_max_segs at 1;
    run(argv) runs a command where dev lives and returns a
    CompletedProcess. Returns {"off": [...], "gso_max_segs": 1}; raises
    OffloadError naming what stayed on."""
    def must(argv):
        r = run(argv)
        if r.returncode != 0:
            err = (r.stderr or r.stdout or "").strip().splitlines()
            raise OffloadError(f"`{' '.join(argv)}` failed: "
                               f"{err[-1] if err else r.returncode}")
        return r.stdout

    names = to_turn_off(parse_features(must(["ethtool", "-k", dev])))
    if names:
        must(["ethtool", "-K", dev] + [w for n in names for w in (n, "off")])
    must(["ip", "link", "set", "dev", dev, "gso_max_segs",
          str(GSO_MAX_SEGS)])
    left = still_on(parse_features(must(["ethtool", "-k", dev])))
    if left:
        raise OffloadError(f"{dev}: cannot turn off {', '.join(left)} "
                           f"(the link would see merged frames)")
    info = json.loads(must(["ip", "-d", "-j", "link", "show", "dev", dev]))
    segs = info[0].get("gso_max_segs")
    if segs is not None and segs > GSO_MAX_SEGS:
        raise OffloadError(f"{dev}: gso_max_segs is {segs}, not "
                           f"{GSO_MAX_SEGS}")
    return {"off": names, "gso_max_segs": GSO_MAX_SEGS}
