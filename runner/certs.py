"""Certificates made at run time with certtool (gnutls-bin): a CA and a
broker certificate signed by it, so no key is ever checked in and every run
(or test session) has its own.

Keys are ECDSA on P-256 (secp256r1), the common choice for IoT brokers
and devices; the certificate chain's size decides a good part of a TLS or
QUIC handshake's bytes, so describe() records key type, curve and the DER
size of each certificate.
"""
import base64
import os
import subprocess

KEY_TYPE = "ecdsa"
CURVE = "secp256r1"
EXPIRATION_DAYS = 2


class CertError(Exception):
    """One line: certtool failed or is missing."""


def certtool(*args, cwd):
    try:
        r = subprocess.run(["certtool", *args], cwd=cwd,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           text=True)
    except FileNotFoundError:
        raise CertError("certtool is missing: install gnutls-bin "
                        "(make deps)") from None
    if r.returncode != 0:
        err = r.stderr.strip().splitlines()
        raise CertError(f"certtool {args[0]} failed: "
                        f"{err[-1] if err else r.returncode}")


def _key(d, name):
    certtool("--generate-privkey", f"--key-type={KEY_TYPE}",
             f"--curve={CURVE}", "--outfile", name + ".key", cwd=d)


def make_ca(d, name, cn=None):
    """d/name.pem and d/name.key: a self-signed CA."""
    with open(os.path.join(d, name + ".tmpl"), "w") as f:
        f.write(f'cn = "{cn or "bench " + name}"\nca\ncert_signing_key\n'
                f'expiration_days = {EXPIRATION_DAYS}\n')
    _key(d, name)
    certtool("--generate-self-signed", "--load-privkey", name + ".key",
             "--template", name + ".tmpl", "--outfile", name + ".pem", cwd=d)
    return os.path.join(d, name + ".pem"), os.path.join(d, name + ".key")


def make_server(d, name, ca, dns_names, ip_addresses):
    """d/name.pem and d/name.key for a TLS server, signed by ca (the stem
    given to make_ca), valid for the given DNS names and IP addresses."""
    lines = [f'cn = "{dns_names[0]}"']
    lines += [f'dns_name = "{n}"' for n in dns_names]
    lines += [f'ip_address = "{a}"' for a in ip_addresses]
    lines += ["tls_www_server", "signing_key", "encryption_key",
              f"expiration_days = {EXPIRATION_DAYS}"]
    with open(os.path.join(d, name + ".tmpl"), "w") as f:
        f.write("\n".join(lines) + "\n")
    _key(d, name)
    certtool("--generate-certificate", "--load-privkey", name + ".key",
             "--load-ca-certificate", ca + ".pem", "--load-ca-privkey",
             ca + ".key", "--template", name + ".tmpl", "--outfile",
             name + ".pem", cwd=d)
    return os.path.join(d, name + ".pem"), os.path.join(d, name + ".key")


def der_size(pem_path):
    """Size in bytes of the (first) certificate in a PEM file, as DER: what
    crosses the wire in a handshake."""
    with open(pem_path) as f:
        text = f.read()
    body = text.split("-----BEGIN CERTIFICATE-----", 1)[1].split(
        "-----END CERTIFICATE-----", 1)[0]
    return len(base64.b64decode("".join(body.split())))


def broker_set(d, dns_names, ip_addresses):
    """A CA and a broker certificate in folder d (created): returns
    {"dir", "ca", "ca_key", "broker", "broker_key"} (paths)."""
    os.makedirs(d, exist_ok=True)
    ca, ca_key = make_ca(d, "ca", cn="mqtt-transport-bench CA")
    broker, broker_key = make_server(d, "broker", "ca", dns_names,
                                     ip_addresses)
    return {"dir": d, "ca": ca, "ca_key": ca_key, "broker": broker,
            "broker_key": broker_key}


def describe(certs, dns_names, ip_addresses):
    return {"key_type": KEY_TYPE, "curve": CURVE, "tool": "certtool",
            "dns_names": list(dns_names),
            "ip_addresses": list(ip_addresses),
            "ca_der_bytes": der_size(certs["ca"]),
            "broker_der_bytes": der_size(certs["broker"]),
            "chain_sent": "broker certificate only (the CA is the client's "
                          "trust anchor)"}
