"""Mininet dumbbell, link profiles as data, and the two link backends.

  profiles   read and validate topologies/profiles/*.toml
  backends   netem (tc) and userspace (linkem) shaping, backend choice
  dumbbell   the topology: library context manager and command line
  cleanup    remove what a run killed with SIGKILL left behind
  measure    ping and iperf3 inside the topology, parsed
  tolerance  what a profile should measure as, and the pass/fail checks
             shared by the calibration and the tests

Everything here runs as root under the system Python (/usr/bin/python3),
which is the one that can import Mininet.
"""
