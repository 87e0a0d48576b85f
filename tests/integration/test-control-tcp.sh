#!/bin/sh
# A control socket on TCP with a token (no KVM needed: kumo relay serves the same control
# server as kumo run): the right token gets replies through kumo ctl and kumo coord; a wrong
# token, no token, a raw client that skips the handshake and a token file others can read get
# nothing but a refusal, and the server logs each refusal. kumo run refuses the bad option
# combinations before it opens /dev/kvm.
cd "$(dirname "$0")/../.." || exit 2
. tests/integration/lib.sh
T=$(mktemp -d)
trap 'kill $relay 2>/dev/null; wait; rm -rf "$T"' EXIT
port=$((30000 + $$ % 20000))
addr=tcp:127.0.0.1:$port
head -c 32 /dev/urandom | base64 > "$T/token"
chmod 600 "$T/token"
head -c 32 /dev/urandom | base64 > "$T/wrong"
chmod 600 "$T/wrong"
cp "$T/token" "$T/open"
chmod 644 "$T/open"

$KUMO relay --agent-socket "$T/agent.sock" --control "$addr" --control-token "$T/token" \
	2> "$T/relay.err" &
relay=$!
i=0
until $KUMO ctl --token "$T/token" "$addr" help > "$T/help" 2>&1; do
	i=$((i + 1))
	[ $i -gt 50 ] && break
	sleep 0.1
done
expect tcp-right-token-help "$T/help" '"agent-stats"'
$KUMO ctl --token "$T/token" "$addr" agent-stats > "$T/stats" 2>&1
expect tcp-right-token-verb "$T/stats" '"connected": *false'

$KUMO ctl --token "$T/wrong" "$addr" help > "$T/wrong.out" 2>&1
check tcp-wrong-token-exit-1 [ $? -eq 1 ]
expect tcp-wrong-token-refused "$T/wrong.out" 'authentication failed'
expect_not tcp-wrong-token-no-reply "$T/wrong.out" '"verbs"'
$KUMO ctl "$addr" help > "$T/none.out" 2>&1
check tcp-no-token-exit-1 [ $? -eq 1 ]
expect tcp-no-token-refused "$T/none.out" 'needs a token file'
$KUMO ctl --token "$T/open" "$addr" help > "$T/open.out" 2>&1
expect tcp-open-token-file-refused "$T/open.out" 'must be 0600'
# A raw client that sends a verb instead of answering the challenge.
python3 - "$port" > "$T/raw.out" 2>&1 <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
s.sendall(b'{"id":1,"verb":"help"}\n')
out = b""
while True:
    d = s.recv(4096)
    if not d:
        break
    out += d
print(out.decode())
PY
expect tcp-raw-challenge "$T/raw.out" '"nonce":"[0-9a-f]{64}"'
expect tcp-raw-refused "$T/raw.out" 'authentication failed'
expect_not tcp-raw-no-reply "$T/raw.out" '"verbs"'
sleep 0.2
expect tcp-refusals-logged "$T/relay.err" 'refused \(wrong token\)'
expect tcp-raw-refusal-logged "$T/relay.err" 'refused \(no token answer\)'

# Silent clients (the challenge read, no answer) filling every slot: each is closed once the
# handshake's time is up, and a client with the token is served again after that.
python3 - "$port" "$T/silent.ready" > "$T/silent.out" 2>&1 <<'PY' &
import socket, sys, time
socks = []
t0 = time.monotonic()
for i in range(64):	# one at a time, each once its challenge came: accepted, not queued
    try:
        s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=20)
        if b"nonce" not in s.recv(4096):
            print("no challenge", i)
        socks.append(s)
    except OSError as e:
        print("connect", i, e)
        break
open(sys.argv[2], "w").close()
closed = 0
for s in socks:
    try:
        while s.recv(4096):
            pass
        closed += 1
    except OSError as e:
        print("recv", e)
print("silent clients %d, closed by the server %d, %.1f s after the first" %
      (len(socks), closed, time.monotonic() - t0))
PY
silent=$!
i=0
until [ -e "$T/silent.ready" ] || [ $i -gt 100 ]; do sleep 0.1; i=$((i + 1)); done
$KUMO ctl --token "$T/token" "$addr" help > "$T/full.out" 2>&1
expect tcp-silent-clients-fill-slots "$T/full.out" 'too many clients'
wait $silent
cat "$T/silent.out"
expect tcp-silent-clients-closed "$T/silent.out" 'silent clients 64, closed by the server 64,'
expect tcp-silent-client-logged "$T/relay.err" 'no token proof within 5000 ms: closed'
$KUMO ctl --token "$T/token" "$addr" help > "$T/after.out" 2>&1
expect tcp-served-after-silent-clients "$T/after.out" '"agent-stats"'

# kumo coord reaches it with --token (the VMM has no stats verb: mem_error, but up).
$KUMO coord --vm "$addr" --token "$T/token" --policy margin --log "$T/coord.jsonl" --duration 2
expect tcp-coord-up "$T/coord.jsonl" '"type":"vm-up"'
$KUMO coord --vm "$addr" --token "$T/wrong" --policy margin --log "$T/coord-wrong.jsonl" \
	--duration 2
expect tcp-coord-wrong-token-down "$T/coord-wrong.jsonl" '"type":"vm-down".*authentication failed'
expect_not tcp-coord-wrong-token-never-up "$T/coord-wrong.jsonl" '"type":"vm-up"'

# kumo run: TCP without a token, a token without TCP, an open token file: usage errors.
K=guest/out/test-bzImage
[ -f "$K" ] || K=/dev/null
$KUMO run --kernel "$K" --control "$addr" > "$T/run1" 2>&1
check tcp-run-needs-token [ $? -eq 2 ] && grep -q 'needs --control-token' "$T/run1"
$KUMO run --kernel "$K" --control "$T/c.sock" --control-token "$T/token" > "$T/run2" 2>&1
check tcp-run-token-needs-tcp [ $? -eq 2 ]
$KUMO run --kernel "$K" --control "$addr" --control-token "$T/open" > "$T/run3" 2>&1
check tcp-run-open-token-refused [ $? -eq 2 ]
expect tcp-run-open-token-says-why "$T/run3" 'must be 0600'
