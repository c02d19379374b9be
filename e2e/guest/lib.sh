# Helpers sourced into every guest test (busybox sh).
#
#   fail REASON...   record REASON and end the test as failed
#   info MSG...      print a progress line
#   need_file PATH   fail unless PATH exists (waits up to 5 s for it)
# A test that runs to its end without calling fail has passed.
#
# Talking to a host-side orchestrator (# e2e-orchestrator:, see e2e/README.md):
#   host_listen             open the host -> guest control channel (/dev/ttyS1,
#                           whose host end is the socket ctl<VM>.sock); call it
#                           before the first `event`, so that nothing the host
#                           sends afterwards is lost
#   event NAME              tell the host that NAME happened: prints the console
#                           line "E2E-EVENT: NAME", which orchestrators wait for
#   host_said MSG           true once the host sent the line MSG
#   wait_host MSG SECONDS   wait until the host sent the line MSG; fail after
#                           SECONDS (a safety bound: the host normally answers
#                           within a few seconds)

fail() {
	echo "$*" >/tmp/e2e-fail-reason
	echo "E2E: FAIL: $*"
	exit 1
}

info() {
	echo "E2E: $*"
}

need_file() {
	_i=0
	while [ ! -e "$1" ]; do
		_i=$((_i + 1))
		[ "$_i" -gt 50 ] && fail "$1 does not exist"
		sleep 0.1
	done
}

E2E_HOST_MSGS=/tmp/e2e-host-msgs

host_listen() {
	[ -c /dev/ttyS1 ] || fail "/dev/ttyS1 (the host's control channel, the second -serial of e2e/run's QEMU) is missing"
	# The shell keeps the port open (fd 9) from now on: data that reaches the
	# UART before a reader has it open would be dropped when it is opened.
	exec 9</dev/ttyS1 || fail "cannot open /dev/ttyS1"
	stty -F /dev/ttyS1 raw -echo 2>/tmp/stty.err || fail "stty raw -echo on /dev/ttyS1 failed: $(cat /tmp/stty.err)"
	: >"$E2E_HOST_MSGS"
	cat <&9 >>"$E2E_HOST_MSGS" &
}

event() {
	echo "E2E-EVENT: $*"
}

host_said() {
	grep -qx "$1" "$E2E_HOST_MSGS" 2>/dev/null
}

wait_host() {
	[ -f "$E2E_HOST_MSGS" ] || fail "wait_host $1: call host_listen first"
	_i=0
	until host_said "$1"; do
		_i=$((_i + 1))
		[ "$_i" -gt $(($2 * 10)) ] &&
			fail "the host did not send '$1' within $2 s (received so far: '$(tr '\n' ' ' <"$E2E_HOST_MSGS")'; see the orchestrator's log)"
		sleep 0.1
	done
}
