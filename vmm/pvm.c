/*
 * PVM emulation-failure decoder and completions. See vmm/pvm.h.
 *
 * The decoder assumes 64-bit mode: emulation failures come from guest CPL0, and a 64-bit Linux
 * kernel only runs CPL0 code in a 64-bit code segment, so 0x40-0x4F are always REX prefixes.
 */
#include <errno.h>
#include <unistd.h>

#include "vmm/pvm.h"

#define PVM_MAX_INSN_LEN 15

#define RFLAGS_CF (1ull << 0)
#define RFLAGS_FIXED1 (1ull << 1)
#define RFLAGS_PF (1ull << 2)
#define RFLAGS_AF (1ull << 4)
#define RFLAGS_ZF (1ull << 6)
#define RFLAGS_SF (1ull << 7)
#define RFLAGS_OF (1ull << 11)
#define RFLAGS_AC (1ull << 18)
/* SDM SYSRET: RFLAGS := (R11 & 3C7FD7H) | 2; drops RF, VM and reserved bits 3, 5, 15, 22+. */
#define SYSRET_RFLAGS_MASK 0x3C7FD7ull

#define CR4_LA57 (1ull << 12)

#define REX_W 0x8
#define REX_R 0x4
#define REX_B 0x1

const char pvm_cmdline_quirks[] =
	/*
	 * Avoid instructions the emulator fails on (PVM-NOTES.md): xrstor (noxsave); SSSE3 (137,
	 * kernel SIMD code's ldmxcsr), CX16 (141), POPCNT (151), FSGSBASE (288), INVPCID (298),
	 * SMAP (308, clac/stac). 11 is X86_FEATURE_SEP (word 0, bit 11): harmless on x86_64, where
	 * the compat vDSO picks SYSENTER/SYSCALL by the synthetic SYSENTER32/SYSCALL32 flags
	 * instead; vdso32=0 is what keeps 32-bit userspace on int $0x80. All numbers must sit in
	 * one clearcpuid=: the kernel's early parser takes only the last occurrence.
	 */
	"noxsave clearcpuid=11,137,141,151,288,298,308 "
	/* Everything runs ~1000x slower in the emulator: skip what only costs time. */
	"mitigations=off nokaslr tsc=reliable no_timer_check lpj=5000000 cryptomgr.notests "
	"random.trust_cpu=on init_on_alloc=0 "
	/* The soft-lockup watchdog fires under emulation and its symbol lookups stall boot. */
	"nosoftlockup nowatchdog "
	/*
	 * Linux 6.1 registers "vdso32=" in arch/x86/entry/vdso/vdso32-setup.c for 32-bit kernels
	 * and IA32 emulation alike ("vdso=" is the 64-bit vDSO switch on x86_64). Without a vDSO,
	 * 32-bit libc falls back to int $0x80.
	 */
	"vdso32=0";
/*
 * Not here: "nohz=off highres=off". They cut the cost of the PIT tick when the guest had no
 * MADT and the PIT drove the tick; kumo provides a MADT, so the LAPIC timer drives it. Nor
 * "8250.nr_uarts=1 quiet": console settings, not PVM quirks.
 */

static const char *const insn_names[PVM_INSN__COUNT] = {
	[PVM_INSN_UNKNOWN] = "unknown", [PVM_INSN_INT3] = "int3",     [PVM_INSN_UD2] = "ud2",
	[PVM_INSN_CLAC] = "clac",       [PVM_INSN_STAC] = "stac",     [PVM_INSN_SWAPGS] = "swapgs",
	[PVM_INSN_SYSRETQ] = "sysretq", [PVM_INSN_FWAIT] = "fwait",   [PVM_INSN_FNCLEX] = "fnclex",
	[PVM_INSN_POPCNT] = "popcnt",
};

const char *pvm_insn_name(enum pvm_insn kind)
{
	if ((unsigned int)kind >= PVM_INSN__COUNT || !insn_names[kind])
		return "unknown";
	return insn_names[kind];
}

int pvm_detect(void)
{
	return access("/sys/module/kvm_pvm", F_OK) == 0;
}

static int decoded(struct pvm_insn_info *out, enum pvm_insn kind, size_t len)
{
	if (len > PVM_MAX_INSN_LEN)
		return -ENOENT;	/* the CPU would raise #GP; nothing for us to complete */
	out->kind = kind;
	out->len = (unsigned int)len;
	return 0;
}

int pvm_decode(const uint8_t *bytes, size_t n, struct pvm_insn_info *out)
{
	int opsize16 = 0, rep = 0, repne = 0;
	unsigned int rex = 0;
	size_t i = 0;
	uint8_t op, modrm;

	if (!bytes || !out)
		return -ENOENT;
	*out = (struct pvm_insn_info){ .kind = PVM_INSN_UNKNOWN, .dst_reg = -1, .src_reg = -1 };
	if (n > PVM_MAX_INSN_LEN)
		n = PVM_MAX_INSN_LEN;

	for (;; i++) {
		if (i >= n)
			return -ENOENT;
		op = bytes[i];
		if ((op & 0xF0) == 0x40) {
			rex = op;	/* of several REX prefixes only the last counts */
			continue;
		}
		switch (op) {
		case 0xF0:	/* LOCK: #UD on everything we complete */
			return -ENOENT;
		case 0x66:
			opsize16 = 1;
			break;
		case 0xF2:
			repne = 1;
			break;
		case 0xF3:
			rep = 1;
			break;
		case 0x26: case 0x2E: case 0x36: case 0x3E: case 0x64: case 0x65:
		case 0x67:	/* only register forms are handled: address size is moot */
			break;
		default:
			goto opcode;
		}
		rex = 0;	/* a REX not directly before the opcode is ignored by the CPU */
	}

opcode:
	i++;
	switch (op) {
	case 0xCC:
		return decoded(out, PVM_INSN_INT3, i);
	case 0x9B:
		/* FCLEX is FWAIT + FNCLEX; complete both at once rather than exit twice. */
		if (i + 2 <= n && bytes[i] == 0xDB && bytes[i + 1] == 0xE2)
			return decoded(out, PVM_INSN_FNCLEX, i + 2);
		return decoded(out, PVM_INSN_FWAIT, i);
	case 0xDB:
		if (i < n && bytes[i] == 0xE2)
			return decoded(out, PVM_INSN_FNCLEX, i + 1);
		return -ENOENT;
	case 0x0F:
		break;
	default:
		return -ENOENT;
	}

	if (i >= n)
		return -ENOENT;
	op = bytes[i++];
	switch (op) {
	case 0x0B:
		return decoded(out, PVM_INSN_UD2, i);
	case 0x07:
		/*
		 * Only SYSRETQ. Plain 0F 07 (sysretl, back to compat mode) is left unknown: Linux
		 * uses it only after a SYSCALL from 32-bit userspace, which vdso32=0 avoids and
		 * which PVM does not deliver to the guest kernel anyway.
		 */
		if (!(rex & REX_W) || rep || repne)
			return -ENOENT;
		return decoded(out, PVM_INSN_SYSRETQ, i);
	case 0x01:
		if (i >= n)
			return -ENOENT;
		modrm = bytes[i++];
		/* F2/F3 turn 0F 01 CA into FRED's ERETS/ERETU; CLAC/STAC are NP (no 66/F2/F3). */
		if (rep || repne)
			return -ENOENT;
		if (modrm == 0xCA && !opsize16)
			return decoded(out, PVM_INSN_CLAC, i);
		if (modrm == 0xCB && !opsize16)
			return decoded(out, PVM_INSN_STAC, i);
		if (modrm == 0xF8)
			return decoded(out, PVM_INSN_SWAPGS, i);
		return -ENOENT;
	case 0xB8:
		/* F3 is mandatory (plain 0F B8 is JMPE, #UD in 64-bit mode); F2 alongside: refuse. */
		if (!rep || repne)
			return -ENOENT;
		if (i >= n)
			return -ENOENT;
		modrm = bytes[i++];
		if ((modrm >> 6) != 3)
			return -ENOENT;	/* memory operand: we have no guest memory access here */
		out->dst_reg = ((modrm >> 3) & 7) | (rex & REX_R ? 8 : 0);
		out->src_reg = (modrm & 7) | (rex & REX_B ? 8 : 0);
		out->opsize = rex & REX_W ? 8 : opsize16 ? 2 : 4;
		return decoded(out, PVM_INSN_POPCNT, i);
	default:
		return -ENOENT;
	}
}

static __u64 *gpr(struct kvm_regs *r, int nr)
{
	switch (nr) {
	case 0: return &r->rax;
	case 1: return &r->rcx;
	case 2: return &r->rdx;
	case 3: return &r->rbx;
	case 4: return &r->rsp;
	case 5: return &r->rbp;
	case 6: return &r->rsi;
	case 7: return &r->rdi;
	case 8: return &r->r8;
	case 9: return &r->r9;
	case 10: return &r->r10;
	case 11: return &r->r11;
	case 12: return &r->r12;
	case 13: return &r->r13;
	case 14: return &r->r14;
	case 15: return &r->r15;
	default: return NULL;
	}
}

static int is_canonical(uint64_t addr, uint64_t cr4)
{
	unsigned int bits = cr4 & CR4_LA57 ? 57 : 48;

	return (uint64_t)((int64_t)(addr << (64 - bits)) >> (64 - bits)) == addr;
}

/*
 * The #UD (EFER.SCE clear, not in 64-bit mode) and #GP (CPL != 0) checks are left out: the
 * instruction reached us from the emulator, i.e. from guest CPL0 64-bit code, and PVM's view
 * of those bits in sregs is not something we want to second-guess. The non-canonical RCX #GP
 * is Intel's behaviour (AMD would switch to CPL3 first and fault there); raising it in kernel
 * mode is the safer of the two for the guest.
 */
static void complete_sysretq(struct pvm_cpu_state *st)
{
	uint16_t base = (uint16_t)(st->star >> 48);

	if (!is_canonical(st->regs.rcx, st->sregs.cr4)) {
		st->inject_vector = 13;	/* #GP(0): the caller adds error code 0 */
		return;
	}
	st->regs.rip = st->regs.rcx;
	st->regs.rflags = (st->regs.r11 & SYSRET_RFLAGS_MASK) | RFLAGS_FIXED1;
	/* SYSRET loads fixed descriptor-cache values, not the GDT entries the selectors name. */
	st->sregs.cs = (struct kvm_segment){
		.base = 0, .limit = 0xffffffff, .selector = (uint16_t)((base + 16) | 3),
		.type = 0xB, .present = 1, .dpl = 3, .db = 0, .s = 1, .l = 1, .g = 1,
	};
	st->sregs.ss = (struct kvm_segment){
		.base = 0, .limit = 0xffffffff, .selector = (uint16_t)((base + 8) | 3),
		.type = 0x3, .present = 1, .dpl = 3, .db = 1, .s = 1, .l = 0, .g = 1,
	};
}

static int complete_popcnt(struct pvm_cpu_state *st, const struct pvm_insn_info *insn)
{
	__u64 *dst = gpr(&st->regs, insn->dst_reg), *src = gpr(&st->regs, insn->src_reg);
	uint64_t val, cnt;

	if (!dst || !src)
		return -EINVAL;
	switch (insn->opsize) {
	case 2:
		val = *src & 0xffff;
		cnt = (uint64_t)__builtin_popcountll(val);
		*dst = (*dst & ~0xffffull) | cnt;	/* 16-bit writes keep bits 63:16 */
		break;
	case 4:
		val = *src & 0xffffffff;
		*dst = (uint64_t)__builtin_popcountll(val);	/* 32-bit writes zero 63:32 */
		break;
	case 8:
		val = *src;
		*dst = (uint64_t)__builtin_popcountll(val);
		break;
	default:
		return -EINVAL;
	}
	st->regs.rflags &= ~(RFLAGS_CF | RFLAGS_PF | RFLAGS_AF | RFLAGS_ZF | RFLAGS_SF | RFLAGS_OF);
	if (!val)
		st->regs.rflags |= RFLAGS_ZF;
	return 0;
}

int pvm_complete(struct pvm_cpu_state *st, const struct pvm_insn_info *insn)
{
	uint64_t tmp;
	int ret;

	if (!st)
		return -EINVAL;
	st->inject_vector = -1;
	if (!insn || insn->len == 0 || insn->len > PVM_MAX_INSN_LEN)
		return -EINVAL;

	switch (insn->kind) {
	case PVM_INSN_INT3:
		/* A trap: the handler's return address is the byte after the int3. */
		st->inject_vector = 3;
		break;
	case PVM_INSN_UD2:
		st->inject_vector = 6;	/* a fault: RIP stays on the ud2 (BUG()/WARN() rely on it) */
		return 0;
	case PVM_INSN_CLAC:
		st->regs.rflags &= ~RFLAGS_AC;
		break;
	case PVM_INSN_STAC:
		st->regs.rflags |= RFLAGS_AC;
		break;
	case PVM_INSN_SWAPGS:
		tmp = st->sregs.gs.base;
		st->sregs.gs.base = st->kernel_gs_base;
		st->kernel_gs_base = tmp;
		break;
	case PVM_INSN_SYSRETQ:
		complete_sysretq(st);
		return 0;	/* RIP comes from RCX (or stays, with #GP) */
	case PVM_INSN_FWAIT:
	case PVM_INSN_FNCLEX:
		/*
		 * FNCLEX clears the x87 exception flags in FSW, and FWAIT would raise #MF on a
		 * pending unmasked one; the x87 state is not in our snapshot (KVM_GET_FPU) and
		 * Linux issues these only in its FPU init paths, with nothing pending. No-ops.
		 */
		break;
	case PVM_INSN_POPCNT:
		ret = complete_popcnt(st, insn);
		if (ret)
			return ret;
		break;
	default:
		return -EINVAL;
	}
	st->regs.rip += insn->len;
	return 0;
}
