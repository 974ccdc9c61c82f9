/*
 * fuzz_common.h: what the MQTT engine's fuzz targets (fuzz_client,
 * fuzz_session) share: the CHECK that ends a run, reading views so that
 * ASan checks where they point, the mirror of the flows a target started
 * (to check the engine's bookkeeping against), the arguments of the
 * publishes and subscribes they issue and the checks of their results.
 *
 * Include after defining FUZZ_NAME, the target's name for messages.
 */
#ifndef FUZZ_COMMON_H
#define FUZZ_COMMON_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mqtt/session.h"

#define CHECK(cond)                                                           \
	do {                                                                  \
		if (!(cond)) {                                                \
			fprintf(stderr, FUZZ_NAME ": %s:%d: %s\n", __FILE__,  \
			        __LINE__, #cond);                             \
			abort();                                              \
		}                                                             \
	} while (0)

#define FLOW_MAX 128 /* flows outstanding: more than a target issues */

/* Read every byte of a view, so that ASan checks where it points. */
static inline unsigned fz_touch(const uint8_t *p, size_t len)
{
	volatile unsigned sum = 0;
	size_t i;

	for (i = 0; i < len; i++)
		sum += p[i];
	return sum;
}

static inline void fz_touch_props(const struct mqtt_props *p)
{
	struct mqtt_user_prop u;
	uint32_t id;
	size_t pos = 0;

	fz_touch(p->raw.data, p->raw.len);
	fz_touch(p->reason_string.data, p->reason_string.len);
	fz_touch(p->content_type.data, p->content_type.len);
	fz_touch(p->response_topic.data, p->response_topic.len);
	fz_touch(p->correlation_data.data, p->correlation_data.len);
	fz_touch(p->assigned_client_id.data, p->assigned_client_id.len);
	fz_touch(p->response_info.data, p->response_info.len);
	fz_touch(p->server_reference.data, p->server_reference.len);
	while (mqtt_props_next_user(p, &pos, &u)) {
		fz_touch(u.key.data, u.key.len);
		fz_touch(u.value.data, u.value.len);
	}
	pos = 0;
	while (mqtt_props_next_sub_id(p, &pos, &id))
		CHECK(id > 0);
}

/* A message as the engine hands it over: valid, and without a Topic
 * Alias (we allow none). */
static inline void fz_check_message(const struct mqtt_publish *m)
{
	CHECK(m->qos <= 2);
	CHECK((m->packet_id != 0) == (m->qos != 0));
	CHECK(!(m->props.present & MQTT_PROP_BIT(MQTT_PROP_TOPIC_ALIAS)));
	CHECK(mqtt_valid_topic_name(m->topic.data, m->topic.len) == 0);
	fz_touch(m->payload.data, m->payload.len);
	fz_touch_props(&m->props);
}

/* ---- flows we started, mirrored ---- */

enum flow_kind { FLOW_QOS1 = 1, FLOW_QOS2 = 2, FLOW_SUB, FLOW_UNSUB };

struct flow {
	uint16_t id;
	uint8_t kind;
};

struct flows {
	struct flow f[FLOW_MAX];
	unsigned n, n_pub; /* flows, and of those publishes (QoS 1, 2) */
};

static inline struct flow *flow_find(struct flows *fl, uint16_t id)
{
	unsigned i;

	for (i = 0; i < fl->n; i++)
		if (fl->f[i].id == id)
			return &fl->f[i];
	return NULL;
}

static inline void flow_add(struct flows *fl, int id, uint8_t kind)
{
	CHECK(id > 0 && id <= 65535);
	/* the engine must not hand out an id that is still in use */
	CHECK(!flow_find(fl, (uint16_t)id));
	CHECK(fl->n < FLOW_MAX);
	fl->f[fl->n].id = (uint16_t)id;
	fl->f[fl->n].kind = kind;
	fl->n++;
	if (kind == FLOW_QOS1 || kind == FLOW_QOS2)
		fl->n_pub++;
}

static inline void flow_del(struct flows *fl, struct flow *f)
{
	if (f->kind == FLOW_QOS1 || f->kind == FLOW_QOS2)
		fl->n_pub--;
	*f = fl->f[--fl->n];
}

/* Forget (un)subscribes always, publishes too when `pubs`; returns the
 * number of publish flows forgotten. */
static inline unsigned flow_drop(struct flows *fl, int pubs)
{
	unsigned i = 0, dropped = 0;

	while (i < fl->n) {
		struct flow *f = &fl->f[i];
		int pub = f->kind == FLOW_QOS1 || f->kind == FLOW_QOS2;

		if (!pub || pubs) {
			dropped += (unsigned)pub;
			flow_del(fl, f);
		} else {
			i++;
		}
	}
	return dropped;
}

/* ---- what the targets issue ---- */

#define FZ_TOPIC "fz/t"

/* v5 properties for a publish: a message expiry and a user property. */
static inline void fz_pub_props(struct mqtt_props *pr)
{
	static const struct mqtt_user_prop up = {
		{ (const uint8_t *)"k", 1 }, { (const uint8_t *)"v", 1 }
	};

	memset(pr, 0, sizeof(*pr));
	pr->present = MQTT_PROP_BIT(MQTT_PROP_MESSAGE_EXPIRY);
	pr->message_expiry = 30;
	pr->n_user = 1;
	pr->user = &up;
}

/* A publish of `qos` returned r: a new flow, QoS 0 done, or a refusal a
 * publisher must expect. */
static inline void fz_published(struct flows *fl, int r, uint8_t qos)
{
	if (r > 0) {
		CHECK(qos > 0);
		flow_add(fl, r, qos);
		return;
	}
	CHECK(r == 0 ? qos == 0
	             : r == CLIENT_EWINDOW || r == CLIENT_EQOS ||
	                       r == CLIENT_ESTATE || r == CLIENT_EBUSY ||
	                       r == CLIENT_ETOOBIG);
}

/* Two filters, QoS 1 and 2 (an unsubscribe takes the first). */
static inline void fz_sub_filters(struct mqtt_topic_filter f[2])
{
	memset(f, 0, 2 * sizeof(*f));
	f[0].filter.data = (const uint8_t *)"fz/#";
	f[0].filter.len = 4;
	f[0].opts.qos = 1;
	f[1].filter.data = (const uint8_t *)"+/t";
	f[1].filter.len = 3;
	f[1].opts.qos = 2;
}

static inline void fz_subscribed(struct flows *fl, int r, int unsub)
{
	if (r > 0) {
		flow_add(fl, r, unsub ? FLOW_UNSUB : FLOW_SUB);
		return;
	}
	CHECK(r == CLIENT_ESTATE || r == CLIENT_EBUSY || r == CLIENT_ETOOBIG ||
	      r == CLIENT_EWINDOW);
}

#endif /* FUZZ_COMMON_H */
