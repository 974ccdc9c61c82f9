#!/usr/bin/env bash
# deps.sh: install the Debian packages the project needs, idempotently:
# nothing happens when all are present; otherwise one apt-get update, then
# only the missing packages.
set -euo pipefail
PKGS=(
	# build
	make gcc clang libclang-rt-14-dev pkg-config
	libgnutls28-dev libjansson-dev libngtcp2-dev libngtcp2-crypto-gnutls-dev
	# broker, peers, certificates
	mosquitto mosquitto-clients gnutls-bin
	# network emulation and measurement
	mininet net-tools bridge-utils iproute2 util-linux iputils-ping ethtool iperf3 procps psmisc jq
	# packet capture (make bench CAPTURE=1)
	tcpdump
	# tests, figures (python3-jsonschema: the result schema's test)
	python3 python3-pytest python3-jsonschema gnuplot-nox
)
missing=()
for p in "${PKGS[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
	echo "deps: all ${#PKGS[@]} packages present"
	exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "error: missing packages: ${missing[*]}; run 'sudo make deps'" >&2
	exit 1
fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
