/* The VM's verbs on the control socket (docs/control-protocol.md). */
#ifndef KUMO_VM_CONTROL_H
#define KUMO_VM_CONTROL_H

struct vm;
struct json_object;

/* Listen on path and serve the VM verbs. 0 or -errno (reported). */
int vm_control_start(struct vm *vm, const char *path) __attribute__((warn_unused_result));
void vm_control_stop(struct vm *vm);

/* Stream an event to subscribed clients (takes ownership of data, which may be NULL). */
void vm_control_event(struct vm *vm, const char *name, struct json_object *data);

#endif
