/* PVM emulation-failure decoder and completions: no /dev/kvm needed. */
#include <errno.h>
#include <unistd.h>

#include "tests/harness.h"
#include "vmm/pvm.h"

#define RFLAGS_AC (1ull << 18)
#define RFLAGS_ARITH 0x8D5ull	/* CF PF AF ZF SF OF */
#define RFLAGS_ZF (1ull << 6)

/* Decodes from a heap copy of exactly n bytes, so ASan flags any read past n. */
static int dec(const uint8_t *bytes, size_t n, struct pvm_insn_info *out)
{
	uint8_t *copy = malloc(n ? n : 1);
	int ret;

	memcpy(copy, bytes, n);
	ret = pvm_decode(copy, n, out);
	free(copy);
	return ret;
}

#define DEC(out, ...)                                                                 \
	({                                                                            \
		static const uint8_t __b[] = { __VA_ARGS__ };                         \
		dec(__b, sizeof(__b), (out));                                         \
	})

/* Decodes and checks kind and length; returns from the test on mismatch. */
#define CHECK_DEC(kind_, len_, ...)                                                   \
	do {                                                                          \
		struct pvm_insn_info __i;                                             \
		CHECK_EQ(DEC(&__i, __VA_ARGS__), 0);                                  \
		CHECK_EQ(__i.kind, (kind_));                                          \
		CHECK_EQ(__i.len, (len_));                                            \
	} while (0)

#define CHECK_NODEC(...)                                                              \
	do {                                                                          \
		struct pvm_insn_info __i;                                             \
		CHECK_EQ(DEC(&__i, __VA_ARGS__), -ENOENT);                            \
	} while (0)

static void test_decode_int3_ud2(void)
{
	CHECK_DEC(PVM_INSN_INT3, 1, 0xCC);
	CHECK_DEC(PVM_INSN_INT3, 2, 0x66, 0xCC);
	CHECK_DEC(PVM_INSN_INT3, 2, 0x48, 0xCC);
	CHECK_DEC(PVM_INSN_INT3, 3, 0x2E, 0x3E, 0xCC);
	CHECK_DEC(PVM_INSN_INT3, 1, 0xCC, 0x0F, 0x0B);	/* trailing bytes are not ours */
	CHECK_DEC(PVM_INSN_UD2, 2, 0x0F, 0x0B);
	CHECK_DEC(PVM_INSN_UD2, 3, 0x66, 0x0F, 0x0B);
	CHECK_DEC(PVM_INSN_UD2, 3, 0x41, 0x0F, 0x0B);
}

static void test_decode_clac_stac_swapgs(void)
{
	CHECK_DEC(PVM_INSN_CLAC, 3, 0x0F, 0x01, 0xCA);
	CHECK_DEC(PVM_INSN_STAC, 3, 0x0F, 0x01, 0xCB);
	CHECK_DEC(PVM_INSN_CLAC, 4, 0x48, 0x0F, 0x01, 0xCA);
	CHECK_DEC(PVM_INSN_STAC, 4, 0x2E, 0x0F, 0x01, 0xCB);
	CHECK_DEC(PVM_INSN_SWAPGS, 3, 0x0F, 0x01, 0xF8);
	CHECK_DEC(PVM_INSN_SWAPGS, 4, 0x66, 0x0F, 0x01, 0xF8);
	CHECK_DEC(PVM_INSN_SWAPGS, 4, 0x48, 0x0F, 0x01, 0xF8);
	CHECK_DEC(PVM_INSN_SWAPGS, 5, 0x65, 0x48, 0x0F, 0x01, 0xF8);
	/* CLAC/STAC are NP; F2/F3 0F 01 CA are FRED's ERETS/ERETU. */
	CHECK_NODEC(0x66, 0x0F, 0x01, 0xCA);
	CHECK_NODEC(0xF3, 0x0F, 0x01, 0xCA);
	CHECK_NODEC(0xF2, 0x0F, 0x01, 0xCA);
	CHECK_NODEC(0xF2, 0x0F, 0x01, 0xCB);
	CHECK_NODEC(0xF3, 0x0F, 0x01, 0xF8);
	CHECK_NODEC(0x0F, 0x01, 0xF9);	/* rdtscp */
	CHECK_NODEC(0x0F, 0x01, 0xD0);	/* xgetbv */
	CHECK_NODEC(0x0F, 0x01, 0x38);	/* invlpg [rax] */
}

static void test_decode_sysretq(void)
{
	CHECK_DEC(PVM_INSN_SYSRETQ, 3, 0x48, 0x0F, 0x07);
	CHECK_DEC(PVM_INSN_SYSRETQ, 3, 0x4F, 0x0F, 0x07);
	CHECK_DEC(PVM_INSN_SYSRETQ, 4, 0x66, 0x48, 0x0F, 0x07);	/* REX.W beats 66 */
	CHECK_DEC(PVM_INSN_SYSRETQ, 4, 0x40, 0x48, 0x0F, 0x07);	/* last REX counts */
	CHECK_NODEC(0x0F, 0x07);		/* sysretl: deliberately unknown */
	CHECK_NODEC(0x40, 0x0F, 0x07);
	CHECK_NODEC(0x48, 0x40, 0x0F, 0x07);
	CHECK_NODEC(0x48, 0x66, 0x0F, 0x07);	/* REX not next to the opcode is ignored */
	CHECK_NODEC(0xF3, 0x48, 0x0F, 0x07);
	CHECK_NODEC(0x48, 0x0F, 0x05);		/* syscall */
}

static void test_decode_fwait_fnclex(void)
{
	CHECK_DEC(PVM_INSN_FWAIT, 1, 0x9B);
	CHECK_DEC(PVM_INSN_FWAIT, 1, 0x9B, 0x90);
	CHECK_DEC(PVM_INSN_FWAIT, 1, 0x9B, 0xDB);		/* DB E2 cut off: fwait alone */
	CHECK_DEC(PVM_INSN_FWAIT, 1, 0x9B, 0xDB, 0xE3);	/* fninit follows */
	CHECK_DEC(PVM_INSN_FWAIT, 1, 0x9B, 0x66, 0xDB, 0xE2);
	CHECK_DEC(PVM_INSN_FNCLEX, 2, 0xDB, 0xE2);
	CHECK_DEC(PVM_INSN_FNCLEX, 3, 0x48, 0xDB, 0xE2);
	CHECK_DEC(PVM_INSN_FNCLEX, 3, 0x9B, 0xDB, 0xE2);	/* fclex in one go */
	CHECK_DEC(PVM_INSN_FNCLEX, 4, 0x3E, 0x9B, 0xDB, 0xE2);
	CHECK_NODEC(0xDB, 0xE3);	/* fninit */
	CHECK_NODEC(0xDB, 0x22);	/* fld m80 */
	CHECK_NODEC(0xDB);
}

static void test_decode_popcnt(void)
{
	struct pvm_insn_info i;

	/* popcnt %ecx, %eax */
	CHECK_EQ(DEC(&i, 0xF3, 0x0F, 0xB8, 0xC1), 0);
	CHECK_EQ(i.kind, PVM_INSN_POPCNT);
	CHECK_EQ(i.len, 4);
	CHECK_EQ(i.dst_reg, 0);
	CHECK_EQ(i.src_reg, 1);
	CHECK_EQ(i.opsize, 4);
	/* popcnt %rcx, %rax */
	CHECK_EQ(DEC(&i, 0xF3, 0x48, 0x0F, 0xB8, 0xC1), 0);
	CHECK_EQ(i.len, 5);
	CHECK_EQ(i.opsize, 8);
	/* popcnt %cx, %ax, both prefix orders */
	CHECK_EQ(DEC(&i, 0x66, 0xF3, 0x0F, 0xB8, 0xC1), 0);
	CHECK_EQ(i.len, 5);
	CHECK_EQ(i.opsize, 2);
	CHECK_EQ(DEC(&i, 0xF3, 0x66, 0x0F, 0xB8, 0xC1), 0);
	CHECK_EQ(i.opsize, 2);
	CHECK_EQ(DEC(&i, 0x66, 0xF3, 0x48, 0x0F, 0xB8, 0xC1), 0);
	CHECK_EQ(i.opsize, 8);
	/* REX before 66 is dropped: 16-bit, no extension */
	CHECK_EQ(DEC(&i, 0xF3, 0x4D, 0x66, 0x0F, 0xB8, 0xC1), 0);
	CHECK_EQ(i.opsize, 2);
	CHECK_EQ(i.dst_reg, 0);
	CHECK_EQ(i.src_reg, 1);
	/* popcnt %r9, %r8 (REX.WRB) */
	CHECK_EQ(DEC(&i, 0xF3, 0x4D, 0x0F, 0xB8, 0xC1), 0);
	CHECK_EQ(i.dst_reg, 8);
	CHECK_EQ(i.src_reg, 9);
	CHECK_EQ(i.opsize, 8);
	/* popcnt %edi, %r15d (REX.R) */
	CHECK_EQ(DEC(&i, 0xF3, 0x44, 0x0F, 0xB8, 0xFF), 0);
	CHECK_EQ(i.dst_reg, 15);
	CHECK_EQ(i.src_reg, 7);
	CHECK_EQ(i.opsize, 4);
	/* popcnt %r12d, %esp (REX.B) */
	CHECK_EQ(DEC(&i, 0xF3, 0x41, 0x0F, 0xB8, 0xE4), 0);
	CHECK_EQ(i.dst_reg, 4);
	CHECK_EQ(i.src_reg, 12);
	/* segment prefix on a register form is harmless */
	CHECK_EQ(DEC(&i, 0x64, 0xF3, 0x0F, 0xB8, 0xD3), 0);
	CHECK_EQ(i.len, 5);
	CHECK_EQ(i.dst_reg, 2);
	CHECK_EQ(i.src_reg, 3);
}

static void test_decode_popcnt_rejects(void)
{
	CHECK_NODEC(0xF3, 0x0F, 0xB8, 0x01);			/* (%rcx) */
	CHECK_NODEC(0xF3, 0x0F, 0xB8, 0x41, 0x08);		/* 8(%rcx) */
	CHECK_NODEC(0xF3, 0x0F, 0xB8, 0x81, 0, 1, 0, 0);	/* 0x100(%rcx) */
	CHECK_NODEC(0xF3, 0x0F, 0xB8, 0x04, 0x24);		/* (%rsp) */
	CHECK_NODEC(0xF3, 0x48, 0x0F, 0xB8, 0x05, 0, 0, 0, 0);	/* rip-relative */
	CHECK_NODEC(0x0F, 0xB8, 0xC1);				/* no F3: jmpe */
	CHECK_NODEC(0xF2, 0x0F, 0xB8, 0xC1);
	CHECK_NODEC(0xF2, 0xF3, 0x0F, 0xB8, 0xC1);
	CHECK_NODEC(0xF3, 0x0F, 0xBD, 0xC1);			/* lzcnt */
	CHECK_NODEC(0xF0, 0xF3, 0x0F, 0xB8, 0xC1);		/* lock */
}

static void test_decode_unknown(void)
{
	struct pvm_insn_info i;
	static const uint8_t cc = 0xCC;

	CHECK_NODEC(0x90);
	CHECK_NODEC(0x0F, 0x05);
	CHECK_NODEC(0x0F, 0xAE, 0x2F);		/* xrstor-ish 0F AE group */
	CHECK_NODEC(0x0F, 0x0F);
	CHECK_NODEC(0xCD, 0x03);		/* int $3, the two-byte form */
	CHECK_NODEC(0xF0, 0xCC);
	CHECK_NODEC(0xF0, 0x0F, 0x01, 0xCA);
	CHECK_NODEC(0x66, 0x66, 0x66);		/* prefixes only */
	CHECK_NODEC(0x48);
	CHECK_EQ(pvm_decode(&cc, 0, &i), -ENOENT);
	CHECK_EQ(pvm_decode(NULL, 1, &i), -ENOENT);
	CHECK_EQ(pvm_decode(&cc, 1, NULL), -ENOENT);
}

static void test_decode_max_length(void)
{
	uint8_t buf[17];
	struct pvm_insn_info i;

	memset(buf, 0x2E, sizeof(buf));
	buf[14] = 0xCC;	/* 14 prefixes + int3 = 15 bytes: legal */
	CHECK_EQ(dec(buf, 15, &i), 0);
	CHECK_EQ(i.len, 15);
	CHECK_EQ(dec(buf, 17, &i), 0);
	CHECK_EQ(i.len, 15);

	buf[14] = 0x2E;
	buf[15] = 0xCC;	/* 16 bytes: #GP on hardware, not ours */
	CHECK_EQ(dec(buf, 16, &i), -ENOENT);

	memset(buf, 0x2E, sizeof(buf));
	buf[13] = 0x0F;
	buf[14] = 0x0B;	/* 13 prefixes + ud2 = 15 */
	CHECK_EQ(dec(buf, 15, &i), 0);
	CHECK_EQ(i.kind, PVM_INSN_UD2);
	buf[13] = 0x2E;
	buf[14] = 0x0F;
	buf[15] = 0x0B;	/* 16 */
	CHECK_EQ(dec(buf, 16, &i), -ENOENT);

	memset(buf, 0x66, sizeof(buf));
	buf[10] = 0xF3;
	memcpy(buf + 11, (const uint8_t[]){ 0x0F, 0xB8, 0xC1 }, 3);	/* 14 */
	CHECK_EQ(dec(buf, 14, &i), 0);
	CHECK_EQ(i.len, 14);
	CHECK_EQ(i.opsize, 2);
	memset(buf, 0x66, sizeof(buf));
	buf[12] = 0xF3;
	memcpy(buf + 13, (const uint8_t[]){ 0x0F, 0xB8, 0xC1 }, 3);	/* 16 */
	CHECK_EQ(dec(buf, 16, &i), -ENOENT);
}

static const struct {
	uint8_t b[8];
	unsigned int len;
} valid[] = {
	{ { 0xCC }, 1 },
	{ { 0x0F, 0x0B }, 2 },
	{ { 0x0F, 0x01, 0xCA }, 3 },
	{ { 0x2E, 0x0F, 0x01, 0xCB }, 4 },
	{ { 0x66, 0x48, 0x0F, 0x01, 0xF8 }, 5 },
	{ { 0x65, 0x48, 0x0F, 0x07 }, 4 },
	{ { 0xDB, 0xE2 }, 2 },
	{ { 0x9B, 0xDB, 0xE2 }, 3 },
	{ { 0xF3, 0x4D, 0x0F, 0xB8, 0xC1 }, 5 },
	{ { 0x66, 0xF3, 0x0F, 0xB8, 0xC1 }, 5 },
};

static void test_decode_truncated(void)
{
	struct pvm_insn_info i;

	for (size_t t = 0; t < sizeof(valid) / sizeof(valid[0]); t++) {
		CHECK_EQ(dec(valid[t].b, valid[t].len, &i), 0);
		CHECK_EQ(i.len, valid[t].len);
		for (size_t n = 0; n < valid[t].len; n++) {
			int ret = dec(valid[t].b, n, &i);

			if (valid[t].b[0] == 0x9B && n >= 1) {
				/* the cut-off fclex is a complete fwait */
				CHECK_EQ(ret, 0);
				CHECK_EQ(i.kind, PVM_INSN_FWAIT);
				CHECK_EQ(i.len, 1);
				continue;
			}
			if (ret != -ENOENT)
				fprintf(stderr, "  case %zu cut to %zu decoded\n", t, n);
			CHECK_EQ(ret, -ENOENT);
		}
	}
}

/* Every 1-, 2- and 3-byte input: a decoded length never exceeds the bytes given. */
static void test_decode_never_past_n(void)
{
	uint8_t buf[3];
	struct pvm_insn_info i;
	unsigned long hits = 0;

	for (uint32_t v = 0; v < (1u << 24); v++) {
		buf[0] = (uint8_t)v;
		buf[1] = (uint8_t)(v >> 8);
		buf[2] = (uint8_t)(v >> 16);
		for (size_t n = 1; n <= 3; n++) {
			if (n < 3 && (v >> (8 * n)))
				continue;	/* shorter inputs: enumerate each once */
			if (pvm_decode(buf, n, &i))
				continue;
			hits++;
			CHECK(i.len >= 1 && i.len <= n);
			CHECK(i.kind > PVM_INSN_UNKNOWN && i.kind < PVM_INSN__COUNT);
		}
	}
	CHECK(hits > 0);
}

static void test_insn_name(void)
{
	CHECK(!strcmp(pvm_insn_name(PVM_INSN_UNKNOWN), "unknown"));
	CHECK(!strcmp(pvm_insn_name(PVM_INSN_INT3), "int3"));
	CHECK(!strcmp(pvm_insn_name(PVM_INSN_UD2), "ud2"));
	CHECK(!strcmp(pvm_insn_name(PVM_INSN_CLAC), "clac"));
	CHECK(!strcmp(pvm_insn_name(PVM_INSN_STAC), "stac"));
	CHECK(!strcmp(pvm_insn_name(PVM_INSN_SWAPGS), "swapgs"));
	CHECK(!strcmp(pvm_insn_name(PVM_INSN_SYSRETQ), "sysretq"));
	CHECK(!strcmp(pvm_insn_name(PVM_INSN_FWAIT), "fwait"));
	CHECK(!strcmp(pvm_insn_name(PVM_INSN_FNCLEX), "fnclex"));
	CHECK(!strcmp(pvm_insn_name(PVM_INSN_POPCNT), "popcnt"));
	CHECK(!strcmp(pvm_insn_name(PVM_INSN__COUNT), "unknown"));
	CHECK(!strcmp(pvm_insn_name((enum pvm_insn)-1), "unknown"));
}

/* A kernel-mode snapshot with every field set to something recognisable. */
static void init_state(struct pvm_cpu_state *st)
{
	memset(st, 0, sizeof(*st));
	st->regs = (struct kvm_regs){
		.rax = 0x1111, .rbx = 0x2222, .rcx = 0x00007fff00001000, .rdx = 0x4444,
		.rsi = 0x5555, .rdi = 0x6666, .rsp = 0xffffc90000003f00, .rbp = 0x8888,
		.r8 = 8, .r9 = 9, .r10 = 10, .r11 = 0x246, .r12 = 12, .r13 = 13, .r14 = 14,
		.r15 = 15, .rip = 0xffffffff81000000, .rflags = 0x46,
	};
	st->sregs.cs = (struct kvm_segment){ .selector = 0x10, .limit = 0xffffffff, .type = 0xB,
					     .present = 1, .s = 1, .l = 1, .g = 1 };
	st->sregs.ss = (struct kvm_segment){ .selector = 0x18, .limit = 0xffffffff, .type = 0x3,
					     .present = 1, .s = 1, .db = 1, .g = 1 };
	st->sregs.gs.base = 0x7f0000001000;
	st->sregs.cr4 = 0x3006f0;
	st->sregs.efer = 0xd01;
	st->kernel_gs_base = 0xffff888007a00000;
	st->star = 0x0023001000000000ull;	/* Linux: __USER32_CS << 48 | __KERNEL_CS << 32 */
	st->inject_vector = 42;
}

static int complete_bytes(struct pvm_cpu_state *st, const uint8_t *b, size_t n)
{
	struct pvm_insn_info i;
	int ret = pvm_decode(b, n, &i);

	return ret ? ret : pvm_complete(st, &i);
}

#define COMPLETE(st, ...)                                                             \
	({                                                                            \
		static const uint8_t __b[] = { __VA_ARGS__ };                         \
		complete_bytes((st), __b, sizeof(__b));                               \
	})

static void test_complete_clac_stac(void)
{
	struct pvm_cpu_state st, want;

	init_state(&st);
	st.regs.rflags |= RFLAGS_AC;
	want = st;
	CHECK_EQ(COMPLETE(&st, 0x0F, 0x01, 0xCA), 0);
	want.regs.rflags &= ~RFLAGS_AC;
	want.regs.rip += 3;
	want.inject_vector = -1;
	CHECK(!memcmp(&st, &want, sizeof(st)));

	CHECK_EQ(COMPLETE(&st, 0x2E, 0x0F, 0x01, 0xCB), 0);
	want.regs.rflags |= RFLAGS_AC;
	want.regs.rip += 4;
	CHECK(!memcmp(&st, &want, sizeof(st)));
	CHECK_EQ(st.regs.rflags, 0x46 | RFLAGS_AC);
}

static void test_complete_swapgs(void)
{
	struct pvm_cpu_state st, want;

	init_state(&st);
	want = st;
	CHECK_EQ(COMPLETE(&st, 0x0F, 0x01, 0xF8), 0);
	want.sregs.gs.base = 0xffff888007a00000;
	want.kernel_gs_base = 0x7f0000001000;
	want.regs.rip += 3;
	want.inject_vector = -1;
	CHECK(!memcmp(&st, &want, sizeof(st)));
	CHECK_EQ(COMPLETE(&st, 0x0F, 0x01, 0xF8), 0);	/* and back */
	CHECK_EQ(st.sregs.gs.base, 0x7f0000001000);
	CHECK_EQ(st.kernel_gs_base, 0xffff888007a00000);
}

static void test_complete_sysretq(void)
{
	struct pvm_cpu_state st, want;

	init_state(&st);
	st.regs.r11 = 0x10246 | (1ull << 17) | (1ull << 3) | (1ull << 40);	/* RF VM rsvd */
	want = st;
	CHECK_EQ(COMPLETE(&st, 0x48, 0x0F, 0x07), 0);
	CHECK_EQ(st.inject_vector, -1);
	CHECK_EQ(st.regs.rip, 0x00007fff00001000);
	CHECK_EQ(st.regs.rflags, 0x246);
	CHECK_EQ(st.regs.rsp, want.regs.rsp);
	CHECK_EQ(st.regs.rcx, want.regs.rcx);
	CHECK_EQ(st.sregs.cs.selector, 0x33);
	CHECK_EQ(st.sregs.cs.base, 0);
	CHECK_EQ(st.sregs.cs.limit, 0xffffffff);
	CHECK_EQ(st.sregs.cs.type, 0xB);
	CHECK_EQ(st.sregs.cs.s, 1);
	CHECK_EQ(st.sregs.cs.present, 1);
	CHECK_EQ(st.sregs.cs.dpl, 3);
	CHECK_EQ(st.sregs.cs.l, 1);
	CHECK_EQ(st.sregs.cs.db, 0);
	CHECK_EQ(st.sregs.cs.g, 1);
	CHECK_EQ(st.sregs.cs.unusable, 0);
	CHECK_EQ(st.sregs.ss.selector, 0x2b);
	CHECK_EQ(st.sregs.ss.base, 0);
	CHECK_EQ(st.sregs.ss.limit, 0xffffffff);
	CHECK_EQ(st.sregs.ss.type, 0x3);
	CHECK_EQ(st.sregs.ss.s, 1);
	CHECK_EQ(st.sregs.ss.present, 1);
	CHECK_EQ(st.sregs.ss.dpl, 3);
	CHECK_EQ(st.sregs.ss.db, 1);
	CHECK_EQ(st.sregs.ss.l, 0);
	CHECK_EQ(st.sregs.ss.g, 1);
	/* nothing else moves */
	want.regs.rip = st.regs.rip;
	want.regs.rflags = st.regs.rflags;
	want.sregs.cs = st.sregs.cs;
	want.sregs.ss = st.sregs.ss;
	want.inject_vector = -1;
	CHECK(!memcmp(&st, &want, sizeof(st)));

	/* the architectural RFLAGS mask, and bit 1 forced on */
	init_state(&st);
	st.regs.r11 = ~0ull;
	CHECK_EQ(COMPLETE(&st, 0x48, 0x0F, 0x07), 0);
	CHECK_EQ(st.regs.rflags, 0x3C7FD7);
	init_state(&st);
	st.regs.r11 = 0;
	CHECK_EQ(COMPLETE(&st, 0x48, 0x0F, 0x07), 0);
	CHECK_EQ(st.regs.rflags, 0x2);

	/* STAR's low RPL bits are overridden to 3 */
	init_state(&st);
	st.star = 0x0028001000000000ull;
	CHECK_EQ(COMPLETE(&st, 0x48, 0x0F, 0x07), 0);
	CHECK_EQ(st.sregs.cs.selector, 0x3b);
	CHECK_EQ(st.sregs.ss.selector, 0x33);

	/* the top of the canonical halves is fine */
	init_state(&st);
	st.regs.rcx = 0xffff800000000000;
	CHECK_EQ(COMPLETE(&st, 0x48, 0x0F, 0x07), 0);
	CHECK_EQ(st.inject_vector, -1);
	CHECK_EQ(st.regs.rip, 0xffff800000000000);
}

static void test_complete_sysretq_noncanonical(void)
{
	static const uint64_t bad[] = { 0x0000800000000000, 0x7fffffffffffffff,
					0xffff7fffffffffff, 0x8000000000000000 };
	struct pvm_cpu_state st, want;

	for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
		init_state(&st);
		st.regs.rcx = bad[k];
		want = st;
		want.inject_vector = 13;
		CHECK_EQ(COMPLETE(&st, 0x48, 0x0F, 0x07), 0);
		CHECK(!memcmp(&st, &want, sizeof(st)));
	}

	/* with LA57 the canonical range is 57 bits wide */
	init_state(&st);
	st.sregs.cr4 |= 1ull << 12;
	st.regs.rcx = 0x0000800000000000;
	CHECK_EQ(COMPLETE(&st, 0x48, 0x0F, 0x07), 0);
	CHECK_EQ(st.inject_vector, -1);
	CHECK_EQ(st.regs.rip, 0x0000800000000000);
	init_state(&st);
	st.sregs.cr4 |= 1ull << 12;
	st.regs.rcx = 0x0100000000000000;
	CHECK_EQ(COMPLETE(&st, 0x48, 0x0F, 0x07), 0);
	CHECK_EQ(st.inject_vector, 13);
	CHECK_EQ(st.regs.rip, 0xffffffff81000000);
}

static void test_complete_fwait_fnclex(void)
{
	struct pvm_cpu_state st, want;

	init_state(&st);
	want = st;
	want.inject_vector = -1;
	CHECK_EQ(COMPLETE(&st, 0x9B), 0);
	want.regs.rip += 1;
	CHECK(!memcmp(&st, &want, sizeof(st)));
	CHECK_EQ(COMPLETE(&st, 0xDB, 0xE2), 0);
	want.regs.rip += 2;
	CHECK(!memcmp(&st, &want, sizeof(st)));
	CHECK_EQ(COMPLETE(&st, 0x9B, 0xDB, 0xE2), 0);
	want.regs.rip += 3;
	CHECK(!memcmp(&st, &want, sizeof(st)));
}

static void test_complete_int3_ud2(void)
{
	struct pvm_cpu_state st, want;

	init_state(&st);
	want = st;
	CHECK_EQ(COMPLETE(&st, 0xCC), 0);
	want.regs.rip += 1;
	want.inject_vector = 3;
	CHECK(!memcmp(&st, &want, sizeof(st)));
	CHECK_EQ(COMPLETE(&st, 0x3E, 0xCC), 0);
	CHECK_EQ(st.regs.rip, 0xffffffff81000003);
	CHECK_EQ(st.inject_vector, 3);

	init_state(&st);
	want = st;
	CHECK_EQ(COMPLETE(&st, 0x0F, 0x0B), 0);
	want.inject_vector = 6;
	CHECK(!memcmp(&st, &want, sizeof(st)));	/* RIP stays on the ud2 */
}

static void test_complete_popcnt_32(void)
{
	struct pvm_cpu_state st;

	init_state(&st);
	st.regs.rax = 0xdeadbeefdeadbeef;
	st.regs.rcx = 0xffffffff80000001;	/* high half ignored, bit 31 counted */
	st.regs.rflags = 0x2 | RFLAGS_ARITH | RFLAGS_AC;
	CHECK_EQ(COMPLETE(&st, 0xF3, 0x0F, 0xB8, 0xC1), 0);
	CHECK_EQ(st.regs.rax, 2);	/* upper 32 bits zeroed */
	CHECK_EQ(st.regs.rcx, 0xffffffff80000001);
	CHECK_EQ(st.regs.rflags, 0x2 | RFLAGS_AC);
	CHECK_EQ(st.regs.rip, 0xffffffff81000004);
	CHECK_EQ(st.inject_vector, -1);

	st.regs.rax = ~0ull;
	st.regs.rcx = 0xffffffff00000000;	/* zero as a 32-bit source */
	CHECK_EQ(COMPLETE(&st, 0xF3, 0x0F, 0xB8, 0xC1), 0);
	CHECK_EQ(st.regs.rax, 0);
	CHECK_EQ(st.regs.rflags, 0x2 | RFLAGS_ZF | RFLAGS_AC);

	st.regs.rcx = 0xffffffff;
	CHECK_EQ(COMPLETE(&st, 0xF3, 0x0F, 0xB8, 0xC1), 0);
	CHECK_EQ(st.regs.rax, 32);
	CHECK_EQ(st.regs.rflags, 0x2 | RFLAGS_AC);
}

static void test_complete_popcnt_64(void)
{
	struct pvm_cpu_state st;

	init_state(&st);
	st.regs.rflags = 0x2 | RFLAGS_ARITH;
	st.regs.rcx = 0x8000000000000001;
	CHECK_EQ(COMPLETE(&st, 0xF3, 0x48, 0x0F, 0xB8, 0xC1), 0);
	CHECK_EQ(st.regs.rax, 2);
	CHECK_EQ(st.regs.rflags, 0x2);
	CHECK_EQ(st.regs.rip, 0xffffffff81000005);

	st.regs.rcx = ~0ull;
	CHECK_EQ(COMPLETE(&st, 0xF3, 0x48, 0x0F, 0xB8, 0xC1), 0);
	CHECK_EQ(st.regs.rax, 64);

	st.regs.rcx = 0;
	CHECK_EQ(COMPLETE(&st, 0xF3, 0x48, 0x0F, 0xB8, 0xC1), 0);
	CHECK_EQ(st.regs.rax, 0);
	CHECK_EQ(st.regs.rflags, 0x2 | RFLAGS_ZF);

	/* popcnt %rax, %rax: source read before the write */
	st.regs.rax = 0xf0f0;
	CHECK_EQ(COMPLETE(&st, 0xF3, 0x48, 0x0F, 0xB8, 0xC0), 0);
	CHECK_EQ(st.regs.rax, 8);
}

static void test_complete_popcnt_16(void)
{
	struct pvm_cpu_state st;

	init_state(&st);
	st.regs.rflags = 0x2 | RFLAGS_ARITH;
	st.regs.rax = 0x1122334455667788;
	st.regs.rcx = 0xffffffffffff8001;	/* only the low 16 bits count */
	CHECK_EQ(COMPLETE(&st, 0x66, 0xF3, 0x0F, 0xB8, 0xC1), 0);
	CHECK_EQ(st.regs.rax, 0x1122334455660002);	/* only ax changes */
	CHECK_EQ(st.regs.rflags, 0x2);
	CHECK_EQ(st.regs.rip, 0xffffffff81000005);

	st.regs.rcx = 0xffffffffffff0000;
	CHECK_EQ(COMPLETE(&st, 0x66, 0xF3, 0x0F, 0xB8, 0xC1), 0);
	CHECK_EQ(st.regs.rax, 0x1122334455660000);
	CHECK_EQ(st.regs.rflags, 0x2 | RFLAGS_ZF);

	st.regs.rcx = 0xffff;
	CHECK_EQ(COMPLETE(&st, 0x66, 0xF3, 0x0F, 0xB8, 0xC1), 0);
	CHECK_EQ(st.regs.rax, 0x1122334455660010);
}

static __u64 *reg_field(struct kvm_regs *r, int nr)
{
	__u64 *map[16] = { &r->rax, &r->rcx, &r->rdx, &r->rbx, &r->rsp, &r->rbp, &r->rsi,
			   &r->rdi, &r->r8,  &r->r9,  &r->r10, &r->r11, &r->r12, &r->r13,
			   &r->r14, &r->r15 };
	return map[nr];
}

/* All 256 register pairs: register k holds k+1 set bits, so a misnumbered source shows. */
static void test_complete_popcnt_registers(void)
{
	for (int d = 0; d < 16; d++) {
		for (int s = 0; s < 16; s++) {
			struct pvm_cpu_state st, want;
			uint8_t b[5] = { 0xF3, (uint8_t)(0x48 | (d & 8) >> 1 | (s & 8) >> 3), 0x0F,
					 0xB8, (uint8_t)(0xC0 | (d & 7) << 3 | (s & 7)) };

			init_state(&st);
			for (int k = 0; k < 16; k++)
				*reg_field(&st.regs, k) = ((1ull << (k + 1)) - 1) << 40;
			want = st;
			CHECK_EQ(complete_bytes(&st, b, sizeof(b)), 0);
			*reg_field(&want.regs, d) = (uint64_t)s + 1;
			want.regs.rip += 5;
			want.regs.rflags &= ~RFLAGS_ARITH;
			want.inject_vector = -1;
			if (memcmp(&st, &want, sizeof(st)))
				fprintf(stderr, "  dst %d src %d\n", d, s);
			CHECK(!memcmp(&st, &want, sizeof(st)));
		}
	}
}

static void test_complete_invalid(void)
{
	struct pvm_cpu_state st;
	struct pvm_insn_info i = { .kind = PVM_INSN_UNKNOWN, .len = 1 };

	init_state(&st);
	CHECK_EQ(pvm_complete(&st, &i), -EINVAL);
	CHECK_EQ(st.inject_vector, -1);
	CHECK_EQ(st.regs.rip, 0xffffffff81000000);
	i.kind = PVM_INSN__COUNT;
	CHECK_EQ(pvm_complete(&st, &i), -EINVAL);
	i = (struct pvm_insn_info){ .kind = PVM_INSN_CLAC, .len = 0 };
	CHECK_EQ(pvm_complete(&st, &i), -EINVAL);
	i.len = 16;
	CHECK_EQ(pvm_complete(&st, &i), -EINVAL);
	i = (struct pvm_insn_info){ .kind = PVM_INSN_POPCNT, .len = 4, .dst_reg = 0,
				    .src_reg = 16, .opsize = 4 };
	CHECK_EQ(pvm_complete(&st, &i), -EINVAL);
	i.src_reg = -1;
	CHECK_EQ(pvm_complete(&st, &i), -EINVAL);
	i.src_reg = 1;
	i.opsize = 3;
	CHECK_EQ(pvm_complete(&st, &i), -EINVAL);
	CHECK_EQ(st.regs.rip, 0xffffffff81000000);
	CHECK_EQ(st.regs.rax, 0x1111);
	CHECK_EQ(pvm_complete(NULL, &i), -EINVAL);
	CHECK_EQ(pvm_complete(&st, NULL), -EINVAL);
}

static void test_cmdline_quirks(void)
{
	const char *q = pvm_cmdline_quirks;

	CHECK(strstr(q, "clearcpuid=11,137,141,151,288,298,308 "));
	CHECK(!strstr(strstr(q, "clearcpuid=") + 1, "clearcpuid="));	/* last one wins */
	CHECK(strstr(q, "vdso32=0"));
	CHECK(strstr(q, "noxsave"));
	CHECK(strstr(q, "nosoftlockup nowatchdog"));
	CHECK(strstr(q, "init_on_alloc=0"));
	CHECK(!strstr(q, "nohz=off"));
	CHECK(!strstr(q, "highres=off"));
	CHECK(!strstr(q, "=sep") && !strstr(q, ",sep"));
	CHECK(!strstr(q, "  "));
	CHECK(q[0] != ' ' && q[strlen(q) - 1] != ' ');
}

static void test_detect(void)
{
	CHECK_EQ(pvm_detect(), access("/sys/module/kvm_pvm", F_OK) == 0);
}

TEST_MAIN(TEST(test_decode_int3_ud2), TEST(test_decode_clac_stac_swapgs),
	  TEST(test_decode_sysretq), TEST(test_decode_fwait_fnclex), TEST(test_decode_popcnt),
	  TEST(test_decode_popcnt_rejects), TEST(test_decode_unknown),
	  TEST(test_decode_max_length), TEST(test_decode_truncated),
	  TEST(test_decode_never_past_n), TEST(test_insn_name), TEST(test_complete_clac_stac),
	  TEST(test_complete_swapgs), TEST(test_complete_sysretq),
	  TEST(test_complete_sysretq_noncanonical), TEST(test_complete_fwait_fnclex),
	  TEST(test_complete_int3_ud2), TEST(test_complete_popcnt_32),
	  TEST(test_complete_popcnt_64), TEST(test_complete_popcnt_16),
	  TEST(test_complete_popcnt_registers), TEST(test_complete_invalid),
	  TEST(test_cmdline_quirks), TEST(test_detect))
