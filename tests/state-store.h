/*
 * A device state store in memory for tests (name -> bytes), behind the dev_state_out/in of
 * devices/dev.h: what migrate/state.c does with an FDT, without one.
 */
#ifndef KUMO_TESTS_STATE_STORE_H
#define KUMO_TESTS_STATE_STORE_H

#include <errno.h>
#include <string.h>

#include "devices/dev.h"
#include "devices/pci.h"
#include "vmm/log.h"

#define STORE_MAX 16
#define PROP_MAX PCI_CFG_SIZE

struct prop {
	char name[32];
	uint8_t data[PROP_MAX];
	size_t len;
};

struct store {
	struct prop p[STORE_MAX];
	int n;
};

static inline struct prop *store_find(struct store *st, const char *name)
{
	for (int i = 0; i < st->n; i++)
		if (!strcmp(st->p[i].name, name))
			return &st->p[i];
	return NULL;
}

static inline int store_put(void *opaque, const char *name, const void *data, size_t len)
{
	struct store *st = opaque;
	struct prop *p;

	if (store_find(st, name))
		return -EEXIST;
	if (st->n == STORE_MAX || len > PROP_MAX || strlen(name) >= sizeof(p->name))
		return -ENOSPC;
	p = &st->p[st->n++];
	strcpy(p->name, name);
	memcpy(p->data, data, len);
	p->len = len;
	return 0;
}

static inline int store_get(void *opaque, const char *name, void *data, size_t len)
{
	struct prop *p = store_find(opaque, name);

	if (!p || p->len != len) {
		pr_err("test store: property %s %s", name, p ? "has the wrong size" : "missing");
		return -EINVAL;
	}
	memcpy(data, p->data, len);
	return 0;
}

static inline int store_get_var(void *opaque, const char *name, const void **data, size_t *len,
			 size_t max)
{
	struct prop *p = store_find(opaque, name);

	if (!p || p->len > max)
		return -EINVAL;
	*data = p->data;
	*len = p->len;
	return 0;
}

static inline struct dev_state_out store_out(struct store *st)
{
	return (struct dev_state_out){ .put = store_put, .opaque = st };
}

static inline struct dev_state_in store_in(struct store *st)
{
	return (struct dev_state_in){ .get = store_get, .get_var = store_get_var, .opaque = st };
}

#endif
