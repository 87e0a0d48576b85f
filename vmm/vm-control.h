/* The VM's verbs on the control socket (docs/control-protocol.md). */
#ifndef KUMO_VM_CONTROL_H
#define KUMO_VM_CONTROL_H

struct vm;
struct json_object;

/* Listen on path and serve the VM verbs. 0 or -errno (reported). */
int vm_control_start(struct vm *vm, const char *path) __attribute__((warn_unused_result));
/* The same; path may be tcp:ADDR:PORT, which needs token_file (control_start_auth). */
int vm_control_start_auth(struct vm *vm, const char *path, const char *token_file)
	__attribute__((warn_unused_result));
void vm_control_stop(struct vm *vm);

/* Stream an event to subscribed clients (takes ownership of data, which may be NULL). */
void vm_control_event(struct vm *vm, const char *name, struct json_object *data);

#endif
