"""The matrix runner of the benchmark: scenarios x link profiles x
transports x repetitions on the Mininet dumbbell, results, figures and the
report. Runs as root under the system Python (/usr/bin/python3).

  mosquitto   the one Mosquitto launcher (runner, tests, loopback bench)
  certs       per-run CA and broker certificate (certtool)
  transports  tcp, tls, quic: the one place a transport is defined
  scenario    scenarios/*.toml: reading, validating, the processes a cell runs
  matrix      which cells a run has
  cell        one cell on a fresh dumbbell
  results     results/<run-id>/: layout, atomic files, summary, CSV
  aggregate   JSON -> gnuplot data files; figures, report, footprint
"""
