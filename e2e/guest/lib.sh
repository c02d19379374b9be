# Helpers sourced into every guest test (busybox sh).
#
#   fail REASON...   record REASON and end the test as failed
#   info MSG...      print a progress line
#   need_file PATH   fail unless PATH exists (waits up to 5 s for it)
# A test that runs to its end without calling fail has passed.

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
