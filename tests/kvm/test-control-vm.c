/*
 * The VM verbs on the control socket against a running tiny guest: status, pause (guest
 * memory stops changing), resume, stats, balloon verbs without a balloon, garbage from one
 * client while another is served, quit (the VM stops with status 0).
 */
#include <poll.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <json-c/json.h>

#include "tests/harness.h"
#include "tests/kvm/tvm.h"
#include "vmm/vm-control.h"

GUEST_CODE(g_spin,
	"mov $0xc0000081, %ecx\n xor %eax, %eax\n mov $0x00180000, %edx\n wrmsr\n"
	"lea 1f(%rip), %rcx\n mov $0x3002, %r11\n sysretq\n"
	"1: mov $0x200000, %rbx\n 2: incq (%rbx)\n out %eax, $0x80\n jmp 2b\n");

static int connect_to(const char *path)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
		return -1;
	return fd;
}

/* Send one line, read one reply line (hang guard 10 s), parse it. */
static struct json_object *request(int fd, const char *line)
{
	static char buf[65536];
	size_t got = 0;

	if (write(fd, line, strlen(line)) != (ssize_t)strlen(line))
		return NULL;
	while (got < sizeof(buf) - 1) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t n;

		if (poll(&p, 1, 10000) <= 0)
			return NULL;
		n = read(fd, buf + got, 1);
		if (n <= 0)
			return NULL;
		if (buf[got++] == '\n')
			break;
	}
	buf[got] = 0;
	return json_tokener_parse(buf);
}

static int ok_of(struct json_object *r)
{
	struct json_object *ok;

	return r && json_object_object_get_ex(r, "ok", &ok) && json_object_get_boolean(ok);
}

static const char *state_of(struct json_object *r)
{
	struct json_object *res, *st;

	if (!r || !json_object_object_get_ex(r, "result", &res) ||
	    !json_object_object_get_ex(res, "state", &st))
		return "";
	return json_object_get_string(st);
}

static void *run_thread(void *arg)
{
	struct tvm *t = arg;

	t->exit_value = tvm_run(t);
	return NULL;
}

static void test_vm_verbs(void)
{
	char path[] = "/tmp/kumo-ctl-test-XXXXXX";
	static struct tvm t;
	struct json_object *r;
	volatile uint64_t *counter;
	pthread_t th;
	uint64_t a, b;
	int fd, fd2;

	if (!kvm_available())
		SKIP("no /dev/kvm");
	CHECK(mkdtemp(path));
	strcat(path, "/ctl");
	CHECK_EQ(tvm_create(&t, 64ULL << 20, 1), 0);
	CHECK_EQ(tvm_load(&t, TVM_CODE_GPA, g_spin_start, g_spin_end), 0);
	CHECK_EQ(tvm_start_user(&t, TVM_CODE_GPA), 0);
	counter = mm_gpa_to_hva(&t.vm.mem, 0x200000, 8);
	CHECK_EQ(vm_control_start(&t.vm, path), 0);
	pthread_create(&th, NULL, run_thread, &t);
	while (*counter == 0)
		usleep(1000);

	fd = connect_to(path);
	fd2 = connect_to(path);
	CHECK(fd >= 0 && fd2 >= 0);
	r = request(fd, "{\"id\":1,\"verb\":\"status\"}\n");
	CHECK(ok_of(r));
	CHECK(!strcmp(state_of(r), "running"));
	json_object_put(r);

	r = request(fd2, "this is not json\n");		/* garbage: an error, connection kept */
	CHECK(r && !ok_of(r));
	json_object_put(r);

	r = request(fd, "{\"verb\":\"pause\"}\n");
	CHECK(ok_of(r));
	json_object_put(r);
	a = *counter;
	usleep(50000);
	b = *counter;
	CHECK_EQ(a, b);
	r = request(fd2, "{\"verb\":\"status\"}\n");	/* the other client is served too */
	CHECK(!strcmp(state_of(r), "paused"));
	json_object_put(r);
	r = request(fd, "{\"verb\":\"resume\"}\n");
	CHECK(ok_of(r));
	json_object_put(r);
	while (*counter == b)
		usleep(1000);

	r = request(fd, "{\"verb\":\"stats\"}\n");
	CHECK(ok_of(r));
	{
		struct json_object *res, *ex, *io;

		CHECK(json_object_object_get_ex(r, "result", &res));
		CHECK(json_object_object_get_ex(res, "exits", &ex));
		CHECK(json_object_object_get_ex(ex, "io", &io));
		CHECK(json_object_get_int64(io) > 0);
	}
	json_object_put(r);

	r = request(fd, "{\"verb\":\"balloon-get\"}\n");	/* no balloon in this VM */
	CHECK(r && !ok_of(r));
	json_object_put(r);
	r = request(fd, "{\"verb\":\"balloon-set\",\"args\":{\"target\":\"lots\"}}\n");
	CHECK(r && !ok_of(r));
	json_object_put(r);

	close(fd2);				/* a client going away changes nothing */
	r = request(fd, "{\"verb\":\"quit\"}\n");
	CHECK(ok_of(r));
	json_object_put(r);
	pthread_join(th, NULL);
	CHECK_EQ(t.vm.stop, VM_STOP_USER);
	CHECK_EQ(t.exit_value, KUMO_EXIT_POWEROFF);
	close(fd);
	vm_control_stop(&t.vm);
	tvm_destroy(&t);
}

TEST_MAIN(TEST(test_vm_verbs))
