/*
 * tls_common.h: what the TLS and QUIC transports share of GnuTLS.
 */
#ifndef NET_TLS_COMMON_H
#define NET_TLS_COMMON_H

#include <gnutls/gnutls.h>

#include "net/transport.h"

/*
 * The server certificate of s did not verify: set c's message to one line
 * saying why and what to do ("<what> with <peer>: certificate not trusted
 * (signer not found); check --cafile") and return TR_ECERT.
 */
int tr_tls_cert_error(struct tr_conn *c, gnutls_session_t s,
                      const char *what);

/*
 * Certificate credentials from ctx's configuration: the trusted CAs
 * (cafile, else the system's, unless insecure or a server), and the
 * certificate with its key (required for a server). 0, or TR_ECONFIG /
 * TR_ENOMEM with one line in err naming the file and what to check.
 */
int tr_tls_load_creds(struct tr_ctx *ctx,
                      gnutls_certificate_credentials_t *out, char *err,
                      size_t errlen);

#endif /* NET_TLS_COMMON_H */
