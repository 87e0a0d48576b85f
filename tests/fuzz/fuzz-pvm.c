/*
 * libFuzzer target for the PVM emulation-failure decoder: the bytes come from guest memory.
 *
 *   clang -fsanitize=fuzzer,address,undefined -I. tests/fuzz/fuzz-pvm.c vmm/pvm.c vmm/log.c \
 *         -o /tmp/fuzz-pvm && /tmp/fuzz-pvm -max_total_time=20 -max_len=32
 *
 * Input: instruction bytes (the VMM passes at most 15/16). Checks that a decode never claims
 * more bytes than it was given and that completing it from a zeroed state is well defined.
 */
// fuzz-sources: vmm/pvm.c vmm/log.c
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vmm/pvm.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct pvm_insn_info insn;
	struct pvm_cpu_state st;
	uint8_t *copy;

	/* An exact-size heap copy so ASan sees any read past size. */
	copy = malloc(size ? size : 1);
	if (!copy)
		return 0;
	memcpy(copy, data, size);
	if (pvm_decode(copy, size, &insn) == 0) {
		if (insn.len == 0 || insn.len > size || insn.len > 15 ||
		    insn.kind <= PVM_INSN_UNKNOWN || insn.kind >= PVM_INSN__COUNT)
			abort();
		memset(&st, 0, sizeof(st));
		if (pvm_complete(&st, &insn))
			abort();	/* whatever decodes must complete */
		if (st.inject_vector != -1 && st.inject_vector != 3 && st.inject_vector != 6 &&
		    st.inject_vector != 13)
			abort();
		(void)pvm_insn_name(insn.kind);
	}
	free(copy);
	return 0;
}
