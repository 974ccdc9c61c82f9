/*
 * tcpinfo.c: a TCP connection's state from the kernel (TCP_INFO), for
 * tr_stats. Apart from transport.c because the kernel's struct tcp_info
 * (linux/tcp.h, with min_rtt and segment counts) and glibc's netinet/tcp.h
 * cannot be included together.
 */
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <linux/tcp.h>

#include "net/transport.h"

void tr_tcp_stats(const struct tr_conn *c, struct tr_stats *out)
{
	struct tcp_info ti;
	socklen_t len = sizeof(ti);
	char cc[16];
	socklen_t cclen = sizeof(cc);

	if (c->fd < 0)
		return;
	memset(&ti, 0, sizeof(ti));
	if (getsockopt(c->fd, IPPROTO_TCP, TCP_INFO, &ti, &len) == 0) {
		out->srtt_ns = (int64_t)ti.tcpi_rtt * 1000;
		out->rttvar_ns = (int64_t)ti.tcpi_rttvar * 1000;
		out->rto_ns = (int64_t)ti.tcpi_rto * 1000;
		out->cwnd_bytes = (int64_t)ti.tcpi_snd_cwnd * ti.tcpi_snd_mss;
		out->inflight_bytes = (int64_t)ti.tcpi_unacked * ti.tcpi_snd_mss;
		out->retransmits = ti.tcpi_total_retrans;
		/* fields the kernel added later: present when it filled them */
		if (len >= offsetof(struct tcp_info, tcpi_min_rtt) +
		                   sizeof(ti.tcpi_min_rtt))
			out->min_rtt_ns = ti.tcpi_min_rtt == UINT32_MAX
			                          ? -1
			                          : (int64_t)ti.tcpi_min_rtt * 1000;
		if (len >= offsetof(struct tcp_info, tcpi_segs_in) +
		                   sizeof(ti.tcpi_segs_in)) {
			out->segs_out = ti.tcpi_segs_out;
			out->segs_in = ti.tcpi_segs_in;
		}
	}
	memset(cc, 0, sizeof(cc));
	if (getsockopt(c->fd, IPPROTO_TCP, TCP_CONGESTION, cc, &cclen) == 0) {
		cc[sizeof(cc) - 1] = '\0';
		memcpy(out->cc, cc, sizeof(out->cc));
	}
	out->buffered = 0; /* the kernel holds TCP's unacknowledged bytes */
}
