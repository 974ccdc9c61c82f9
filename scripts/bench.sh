#!/usr/bin/env bash
# bench.sh: what `make bench` runs today. It says plainly what is measured
# and what is not built yet; it never prints a figure no program measured.
set -u
cd "$(dirname "$0")/.."
echo "== make bench: MQTT transport benchmark"
echo
echo "-- 1. Loopback: our loadgen + sink against mosquitto_pub + mosquitto_sub"
echo "      through one private Mosquitto, and 10,000 idle TCP connections"
scripts/bench-loopback.sh "$@"
rc=$?
echo
echo "-- 2. The matrix on the emulated dumbbell (scenarios x link profiles x"
echo "      transports x repetitions, results/<run-id>/ with figures): NOT YET."
echo "      The runner that drives it is a later piece of work. What exists:"
echo "      the dumbbell and its link profiles (/usr/bin/python3 -m"
echo "      topologies.dumbbell --help) and their calibration (make calibrate)."
exit $rc
