/*
 * virtio-blk: the device model (features, config space, request parsing, options). The I/O
 * itself is done by the io_uring thread in virtio-blk-uring.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "devices/dev.h"
#include "devices/virtio-blk.h"
#include "vmm/log.h"

_Static_assert(offsetof(struct virtio_blk_config, blk_size) == 20, "virtio-blk config");
_Static_assert(offsetof(struct virtio_blk_config, num_queues) == 34, "virtio-blk config");
_Static_assert(offsetof(struct virtio_blk_config, write_zeroes_may_unmap) == 56,
	       "virtio-blk config");
_Static_assert(sizeof(struct virtio_blk_config) == 72, "virtio-blk config");

struct blk_req_hdr {
	uint32_t type;
	uint32_t ioprio;
	uint64_t sector;
};

/* dst = the bytes [off, off+len) of src. Returns the number of iovecs. */
static unsigned int iov_slice(const struct iovec *src, unsigned int n, uint64_t off,
			      uint64_t len, struct iovec *dst)
{
	unsigned int k = 0;

	for (unsigned int i = 0; i < n && len; i++) {
		uint64_t l = src[i].iov_len, c;

		if (off >= l) {
			off -= l;
			continue;
		}
		c = l - off < len ? l - off : len;
		dst[k++] = (struct iovec){ (uint8_t *)src[i].iov_base + off, c };
		len -= c;
		off = 0;
	}
	return k;
}

static int range_ok(const struct blk_limits *l, uint64_t sector, uint64_t nsectors)
{
	return sector <= l->capacity && nsectors <= l->capacity - sector;
}

int virtio_blk_parse(const struct virtq_elem *e, const struct blk_limits *l, struct blk_req *r)
{
	struct blk_req_hdr hdr;
	uint64_t in_data, n;

	r->status = NULL;
	r->niov = 0;
	r->len = 0;
	r->nseg = 0;
	r->type = UINT32_MAX;
	r->sector = 0;
	/* The status byte is the last device-writable byte. */
	for (unsigned int i = e->nin; i > 0; i--) {
		if (e->in[i - 1].iov_len) {
			r->status = (uint8_t *)e->in[i - 1].iov_base + e->in[i - 1].iov_len - 1;
			break;
		}
	}
	if (!r->status || !e->in_len)
		return VIRTIO_BLK_S_IOERR;	/* nothing to report it in: returned with len 0 */
	if (e->out_len < sizeof(hdr) ||
	    iov_to_buf(e->out, e->nout, 0, &hdr, sizeof(hdr)) != sizeof(hdr))
		return VIRTIO_BLK_S_IOERR;
	r->type = hdr.type;
	r->sector = hdr.sector;
	in_data = e->in_len - 1;

	switch (hdr.type) {
	case VIRTIO_BLK_T_IN:
		r->niov = iov_slice(e->in, e->nin, 0, in_data, r->iov);
		r->len = in_data;
		break;
	case VIRTIO_BLK_T_OUT:
		if (l->read_only)
			return VIRTIO_BLK_S_IOERR;
		r->len = e->out_len - sizeof(hdr);
		r->niov = iov_slice(e->out, e->nout, sizeof(hdr), r->len, r->iov);
		break;
	case VIRTIO_BLK_T_FLUSH:
		return VIRTIO_BLK_S_EXEC;
	case VIRTIO_BLK_T_GET_ID:
		r->len = in_data < VIRTIO_BLK_ID_BYTES ? in_data : VIRTIO_BLK_ID_BYTES;
		r->niov = iov_slice(e->in, e->nin, 0, r->len, r->iov);
		return VIRTIO_BLK_S_EXEC;
	case VIRTIO_BLK_T_DISCARD:
	case VIRTIO_BLK_T_WRITE_ZEROES:
		if (l->read_only)
			return VIRTIO_BLK_S_IOERR;
		if (hdr.type == VIRTIO_BLK_T_DISCARD ? !l->discard : !l->write_zeroes)
			return VIRTIO_BLK_S_UNSUPP;
		n = e->out_len - sizeof(hdr);
		if (!n || n % sizeof(struct blk_dwz_seg) ||
		    n / sizeof(struct blk_dwz_seg) > VIRTIO_BLK_MAX_DWZ_SEGS)
			return VIRTIO_BLK_S_IOERR;
		r->nseg = n / sizeof(struct blk_dwz_seg);
		iov_to_buf(e->out, e->nout, sizeof(hdr), r->seg, n);
		for (unsigned int i = 0; i < r->nseg; i++) {
			const struct blk_dwz_seg *s = &r->seg[i];

			if (s->flags & ~(uint32_t)VIRTIO_BLK_DWZ_F_UNMAP)
				return VIRTIO_BLK_S_UNSUPP;
			if (hdr.type == VIRTIO_BLK_T_DISCARD && s->flags)
				return VIRTIO_BLK_S_UNSUPP;
			if (s->num_sectors > VIRTIO_BLK_MAX_DWZ_SECTORS ||
			    !range_ok(l, s->sector, s->num_sectors))
				return VIRTIO_BLK_S_IOERR;
		}
		return VIRTIO_BLK_S_EXEC;
	default:
		return VIRTIO_BLK_S_UNSUPP;
	}
	/* IN / OUT */
	if (r->len % VIRTIO_BLK_SECTOR ||
	    !range_ok(l, r->sector, r->len / VIRTIO_BLK_SECTOR))
		return VIRTIO_BLK_S_IOERR;
	return VIRTIO_BLK_S_EXEC;
}

uint32_t virtio_blk_used_len(const struct blk_req *r, int status)
{
	if (!r->status)
		return 0;
	if (status == VIRTIO_BLK_S_OK &&
	    (r->type == VIRTIO_BLK_T_IN || r->type == VIRTIO_BLK_T_GET_ID))
		return (uint32_t)r->len + 1;
	return 1;
}

int virtio_blk_parse_option(const char *arg, char **path, struct blk_options *o, char *err,
			    size_t errlen)
{
	char *s, *tok, *save = NULL;
	int ret = -EINVAL;

	memset(o, 0, sizeof(*o));
	*path = NULL;
	s = strdup(arg ? arg : "");
	if (!s)
		return -ENOMEM;
	tok = strtok_r(s, ",", &save);
	if (!tok || !*tok || s[0] == ',') {
		snprintf(err, errlen, "--disk: missing path");
		goto out;
	}
	*path = strdup(tok);
	if (!*path) {
		ret = -ENOMEM;
		goto out;
	}
	while ((tok = strtok_r(NULL, ",", &save))) {
		if (!strcmp(tok, "ro") || !strcmp(tok, "readonly")) {
			o->read_only = 1;
		} else if (!strcmp(tok, "cache=none")) {
			o->cache_host = 0;
		} else if (!strcmp(tok, "cache=host")) {
			o->cache_host = 1;
		} else if (!strncmp(tok, "serial=", 7)) {
			if (strlen(tok + 7) > VIRTIO_BLK_ID_BYTES) {
				snprintf(err, errlen, "--disk: serial longer than %d bytes",
					 VIRTIO_BLK_ID_BYTES);
				goto err_path;
			}
			strcpy(o->serial, tok + 7);
		} else {
			snprintf(err, errlen, "--disk: unknown option '%s'", tok);
			goto err_path;
		}
	}
	ret = 0;
	goto out;

err_path:
	free(*path);
	*path = NULL;
out:
	free(s);
	return ret;
}

/* ---- the device ---- */

static struct virtio_blk *to_blk(struct virtio_dev *vdev)
{
	return vdev->priv;
}

static unsigned int blk_num_queues(struct virtio_dev *vdev)
{
	return 1;
}

static uint64_t blk_features(struct virtio_dev *vdev)
{
	struct virtio_blk *b = to_blk(vdev);
	uint64_t f = 1ULL << VIRTIO_BLK_F_SEG_MAX | 1ULL << VIRTIO_BLK_F_BLK_SIZE |
		     1ULL << VIRTIO_BLK_F_FLUSH | 1ULL << VIRTIO_BLK_F_TOPOLOGY |
		     1ULL << VIRTIO_F_INDIRECT_DESC | 1ULL << VIRTIO_F_EVENT_IDX;

	if (b->opts.read_only)
		f |= 1ULL << VIRTIO_BLK_F_RO;
	if (b->lim.discard)
		f |= 1ULL << VIRTIO_BLK_F_DISCARD;
	if (b->lim.write_zeroes)
		f |= 1ULL << VIRTIO_BLK_F_WRITE_ZEROES;
	return f;
}

static void blk_config_read(struct virtio_dev *vdev, uint32_t off, void *data, uint32_t len)
{
	struct virtio_blk *b = to_blk(vdev);
	const uint8_t *cfg = (const uint8_t *)&b->cfg;

	memset(data, 0, len);
	if (off < sizeof(b->cfg))
		memcpy(data, cfg + off, len < sizeof(b->cfg) - off ? len : sizeof(b->cfg) - off);
}

static void blk_config_write(struct virtio_dev *vdev, uint32_t off, const void *data,
			     uint32_t len)
{
	/* writeback is only writable with CONFIG_WCE, which we do not offer. */
}

static int blk_activate(struct virtio_dev *vdev)
{
	struct virtq *vq = &vdev->vqs[0];

	vq->event_idx = virtio_has_feature(vdev, VIRTIO_F_EVENT_IDX);
	vq->indirect = virtio_has_feature(vdev, VIRTIO_F_INDIRECT_DESC);
	return blk_uring_start(to_blk(vdev));
}

static void blk_reset(struct virtio_dev *vdev)
{
	blk_uring_stop(to_blk(vdev));
}

static void blk_queue_notify(struct virtio_dev *vdev, unsigned int q)
{
	blk_uring_kick(to_blk(vdev));
}

static void blk_fd_ready(struct virtio_dev *vdev, uint32_t tag, uint32_t events)
{
	blk_uring_complete(to_blk(vdev));
}

static void blk_drain(struct virtio_dev *vdev)
{
	blk_uring_drain(to_blk(vdev));
}

/* The disk's size is part of what the guest saw: a restore onto another size is refused. */
static int blk_save(struct virtio_dev *vdev, const struct dev_state_out *out)
{
	uint64_t cap = to_blk(vdev)->cfg.capacity;

	return dev_put(out, "blk-capacity", &cap, sizeof(cap));
}

static int blk_load(struct virtio_dev *vdev, const struct dev_state_in *in)
{
	struct virtio_blk *b = to_blk(vdev);
	uint64_t cap;
	int ret = dev_get(in, "blk-capacity", &cap, sizeof(cap));

	if (ret)
		return ret;
	if (cap != b->cfg.capacity) {
		pr_err("state: disk %s: %" PRIu64 " sectors, the state has %" PRIu64, b->path,
		       (uint64_t)b->cfg.capacity, cap);
		return -EINVAL;
	}
	return 0;
}

static const struct virtio_dev_ops blk_ops = {
	.name = "virtio-blk",
	.device_id = VIRTIO_ID_BLOCK,
	.pci_class = VIRTIO_BLK_PCI_CLASS,
	.queue_max_size = VIRTIO_BLK_QUEUE_SIZE,
	.config_size = sizeof(struct virtio_blk_config),
	.num_queues = blk_num_queues,
	.features = blk_features,
	.config_read = blk_config_read,
	.config_write = blk_config_write,
	.activate = blk_activate,
	.reset = blk_reset,
	.queue_notify = blk_queue_notify,
	.fd_ready = blk_fd_ready,
	.drain = blk_drain,
	.save = blk_save,
	.load = blk_load,
};

static unsigned int ilog2u(uint32_t v)
{
	unsigned int r = 0;

	while (v > 1) {
		v >>= 1;
		r++;
	}
	return r;
}

/* Size, block sizes and O_DIRECT alignment of the open disk. */
static int blk_probe(struct virtio_blk *b, uint64_t *size, uint32_t *lbs, uint32_t *pbs)
{
	struct statx sx;
	struct stat st;

	if (fstat(b->fd_buffered, &st) < 0)
		return -errno;
	*lbs = VIRTIO_BLK_SECTOR;
	*pbs = 0;
	if (S_ISBLK(st.st_mode)) {
		int l = 0;
		unsigned int p = 0;

		b->is_blkdev = 1;
		if (ioctl(b->fd_buffered, BLKGETSIZE64, size) < 0)
			return -errno;
		if (!ioctl(b->fd_buffered, BLKSSZGET, &l) && l >= VIRTIO_BLK_SECTOR)
			*lbs = (uint32_t)l;
		if (!ioctl(b->fd_buffered, BLKPBSZGET, &p))
			*pbs = p;
	} else if (S_ISREG(st.st_mode)) {
		*size = (uint64_t)st.st_size;
	} else {
		return -EINVAL;
	}
	b->dio_mem_align = b->dio_off_align = 1;
	if (b->fd != b->fd_buffered) {
		b->dio_mem_align = b->dio_off_align = *lbs;
		if (!statx(b->fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &sx) &&
		    (sx.stx_mask & STATX_DIOALIGN) && sx.stx_dio_offset_align) {
			b->dio_mem_align = sx.stx_dio_mem_align;
			b->dio_off_align = sx.stx_dio_offset_align;
		}
		/* Advertise a block size the host can do O_DIRECT at. */
		if (b->dio_off_align > *lbs && b->dio_off_align <= 4096 &&
		    !(b->dio_off_align & (b->dio_off_align - 1)))
			*lbs = b->dio_off_align;
	}
	return 0;
}

static void blk_fill_config(struct virtio_blk *b, uint64_t size, uint32_t lbs, uint32_t pbs)
{
	struct virtio_blk_config *c = &b->cfg;

	memset(c, 0, sizeof(*c));
	c->capacity = size / VIRTIO_BLK_SECTOR;
	c->seg_max = VIRTQ_MAX_SEGS - 2;	/* header and status take two */
	c->blk_size = lbs;
	c->physical_block_exp = pbs > lbs ? (uint8_t)ilog2u(pbs / lbs) : 0;
	c->min_io_size = 1;
	c->num_queues = 1;
	c->max_discard_sectors = VIRTIO_BLK_MAX_DWZ_SECTORS;
	c->max_discard_seg = VIRTIO_BLK_MAX_DWZ_SEGS;
	c->discard_sector_alignment = lbs / VIRTIO_BLK_SECTOR;
	c->max_write_zeroes_sectors = VIRTIO_BLK_MAX_DWZ_SECTORS;
	c->max_write_zeroes_seg = VIRTIO_BLK_MAX_DWZ_SEGS;
	c->write_zeroes_may_unmap = 0;
	b->lim.capacity = c->capacity;
	b->lim.read_only = b->opts.read_only;
	b->lim.discard = b->lim.write_zeroes = !b->opts.read_only;
}

int virtio_blk_create(const struct dev_env *env, const char *path, const struct blk_options *o,
		      struct virtio_dev **out)
{
	int flags = (o->read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC;
	struct virtio_blk *b;
	uint64_t size = 0;
	uint32_t lbs, pbs;
	int ret;

	b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->opts = *o;
	b->opts.serial[VIRTIO_BLK_ID_BYTES] = '\0';
	b->path = strdup(path);
	if (!b->path) {
		ret = -ENOMEM;
		goto err_free;
	}
	b->fd_buffered = open(path, flags);
	if (b->fd_buffered < 0) {
		ret = -errno;
		pr_err("disk %s: %s", path, strerror(errno));
		goto err_path;
	}
	b->fd = b->fd_buffered;
	if (!o->cache_host) {
		b->fd = open(path, flags | O_DIRECT);
		if (b->fd < 0) {
			ret = -errno;
			pr_err("disk %s: O_DIRECT: %s (use cache=host)", path, strerror(errno));
			goto err_fd;
		}
	}
	ret = blk_probe(b, &size, &lbs, &pbs);
	if (ret) {
		pr_err("disk %s: not a usable file or block device: %s", path, strerror(-ret));
		goto err_dfd;
	}
	if (size % VIRTIO_BLK_SECTOR)
		pr_warn("disk %s: size is not a multiple of 512, the tail is not visible", path);
	blk_fill_config(b, size, lbs, pbs);
	ret = virtio_dev_init(&b->vdev, &blk_ops, env, b);
	if (ret)
		goto err_dfd;
	*out = &b->vdev;
	return 0;

err_dfd:
	if (b->fd != b->fd_buffered)
		close(b->fd);
err_fd:
	close(b->fd_buffered);
err_path:
	free(b->path);
err_free:
	free(b);
	return ret;
}

void virtio_blk_destroy(struct virtio_dev *vdev)
{
	struct virtio_blk *b;

	if (!vdev)
		return;
	b = to_blk(vdev);
	virtio_dev_exit(vdev);	/* stops the worker */
	blk_uring_stop(b);
	if (b->fd != b->fd_buffered)
		close(b->fd);
	close(b->fd_buffered);
	free(b->path);
	free(b);
}
