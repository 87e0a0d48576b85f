/*
 * PCI bus 0: a host bridge reached through the 0xCF8/0xCFC mechanism and through ECAM (MMIO,
 * described by the MCFG table), devices with a 4 KiB configuration space, BARs allocated in
 * the 32-bit hole and re-registered on the buses when the guest moves or (dis)enables them.
 */
#ifndef KUMO_PCI_H
#define KUMO_PCI_H

#include <pthread.h>
#include <stdint.h>

struct bus;
struct io_ops;
struct dev_ops;
struct dev_state_in;
struct dev_state_out;

#define PCI_CFG_SIZE 4096
#define PCI_MAX_SLOTS 32
#define PCI_NUM_BARS 6

enum pci_bar_type { PCI_BAR_NONE = 0, PCI_BAR_MEM32, PCI_BAR_MEM64, PCI_BAR_IO };

struct pci_bar {
	enum pci_bar_type type;
	uint64_t size;			/* power of two */
	uint64_t addr;			/* current address as programmed */
	const struct io_ops *ops;	/* handlers get the offset inside the BAR */
	void *opaque;
	int mapped;			/* registered on a bus right now */
};

struct pci_device {
	const char *name;
	uint8_t cfg[PCI_CFG_SIZE];
	uint8_t wmask[PCI_CFG_SIZE];	/* bits the guest may write */
	uint8_t w1cmask[PCI_CFG_SIZE];	/* bits the guest clears by writing 1 */
	struct pci_bar bars[PCI_NUM_BARS];
	uint8_t next_cap;		/* where the next capability goes */
	int slot;
	struct pci_host *host;
	/* Called after the guest wrote config space [off, off+len) (e.g. MSI-X enable). */
	void (*cfg_written)(struct pci_device *d, uint32_t off, uint32_t len);
	/* Called before a guest read of [off, off+len), to refresh cfg[] (optional). */
	void (*cfg_before_read)(struct pci_device *d, uint32_t off, uint32_t len);
	/*
	 * Called after BAR idx was registered on its bus at addr (mapped=1) and before it is
	 * unregistered from addr (mapped=0), e.g. to move ioeventfds with the BAR (optional).
	 * The host lock is held: do not call back into pci_cfg_*.
	 */
	void (*bar_mapped)(struct pci_device *d, int idx, uint64_t addr, int mapped);
	void *owner;
};

struct pci_host {
	pthread_mutex_t lock;
	struct bus *pio, *mmio;
	struct pci_device *slots[PCI_MAX_SLOTS];
	uint32_t cf8;			/* CONFIG_ADDRESS latch */
	uint64_t mmio_next, mmio_end;	/* BAR allocator in the 32-bit window */
	uint32_t io_next, io_end;
	/* 0xCF9 sits inside CONFIG_ADDRESS: byte accesses to it go here (the reset register). */
	const struct io_ops *cf9_ops;
	void *cf9_opaque;
};

/* Register the bridge (slot 0), 0xCF8-0xCFF and ECAM at PCI_ECAM_GPA. 0 or -errno. */
int pci_host_init(struct pci_host *h, struct bus *pio, struct bus *mmio)
	__attribute__((warn_unused_result));
void pci_host_destroy(struct pci_host *h);

/* Forward byte accesses to port 0xCF9 (ACPI reset register) to ops; call after init. */
void pci_host_set_reset_port(struct pci_host *h, const struct io_ops *ops, void *opaque);

/* Header type 0 with the given ids; class_code is 24-bit (class, subclass, prog-if). */
void pci_device_init(struct pci_device *d, const char *name, uint16_t vendor, uint16_t device,
		     uint32_t class_code, uint8_t revision, uint16_t subsys_vendor,
		     uint16_t subsys_id);

/* Declare BAR idx (a 64-bit BAR also takes idx+1). size is rounded up to a power of two. */
int pci_device_add_bar(struct pci_device *d, int idx, enum pci_bar_type type, uint64_t size,
		       const struct io_ops *ops, void *opaque) __attribute__((warn_unused_result));

/* Append a capability (cap[0] = id, cap[1] is the next pointer, filled in here) of len bytes.
 * Returns its offset in config space, or -E2BIG. The caller sets wmask for writable fields. */
int pci_device_add_cap(struct pci_device *d, const void *cap, uint8_t len);

/* Put d in the first free slot and allocate its BARs. Returns the slot or -errno. */
int pci_host_add(struct pci_host *h, struct pci_device *d) __attribute__((warn_unused_result));

/* Unmap d's BARs and free its slot. */
void pci_host_remove(struct pci_host *h, struct pci_device *d);

/* Config-space access as the guest does it (also used by tests). off/len are bounds-checked. */
void pci_cfg_read(struct pci_device *d, uint32_t off, void *data, uint32_t len);
void pci_cfg_write(struct pci_device *d, uint32_t off, const void *data, uint32_t len);

/*
 * State of one function: property "config", its PCI_CFG_SIZE bytes of config space. Load
 * refuses (-EINVAL, naming the offset) a byte whose read-only bits differ from this device's
 * (ids, header type, capability list, BAR flags and size bits...) and a BAR that would overlap
 * another range on its bus; otherwise it applies the config and maps the BARs as a guest write
 * would (bar_mapped fires). It does not call cfg_written: the owner loads its own state.
 */
int pci_device_save(struct pci_device *d, const struct dev_state_out *o)
	__attribute__((warn_unused_result));
int pci_device_load(struct pci_device *d, const struct dev_state_in *in)
	__attribute__((warn_unused_result));

/* dev is a struct pci_host *; state: "cf8" (u32, CONFIG_ADDRESS), "config" (the bridge). */
extern const struct dev_ops pci_host_dev_ops;

#endif
