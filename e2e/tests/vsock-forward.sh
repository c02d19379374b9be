# vhost-device-vsock forwarding to host AF_VSOCK (--forward-cid,
# --forward-listen), tested INSIDE the guest: the build host has no AF_VSOCK,
# but the guest kernel has vsock with the loopback transport (CID 1 is the
# guest itself).  So the daemon and a vhost-user front end that plays the
# daemon's guest (vhost-device-test-frontend) both run in this guest, and the
# "host" AF_VSOCK side is the guest's own loopback:
#   guest -> host: the front end (guest CID 3) connects to CID 2 port 1234;
#     the daemon (--forward-cid 1) connects to AF_VSOCK 1:1234, where
#     `vsock-guest sink` listens;
#   host -> guest: `vsock-guest source` connects to AF_VSOCK 1:7000, where the
#     daemon (--forward-listen 7000 --forward-peers 1: only the loopback
#     peer, CID 1) accepts and forwards into its guest, port 7000: the front
#     end's `vsock-recv`.
# Each way moves 4 MiB; the CRC-32 printed by the sender and by the receiver
# must agree.  Last, a second daemon listening for CID 4242 only must close
# the loopback peer's connection and forward nothing.  No vhost-user device
# is attached to QEMU (plain boot).
#
# The two workspace binaries go into this test's initramfs (e2e-guest-binary,
# debug info stripped, with their shared libraries).  The test runs only when
# the daemon and the front end have the options it needs (e2e-require).
#
# e2e-guest-binary: vhost-device-vsock vhost-device-test-frontend
# e2e-require: @BIN@/vhost-device-vsock --help | grep -q -- --forward-peers
# e2e-require: @BIN@/vhost-device-test-frontend --help | grep -q vsock-send
# e2e-require: @BIN@/vhost-device-test-frontend --help | grep -q vsock-recv
# e2e-timeout: 120

MiB=1048576
BYTES=$((4 * MiB))
G2H_PORT=1234
H2G_PORT=7000
H2G_SEED=3
SOCK=/tmp/v.sock
DLOG=/tmp/daemon.log
# Each transfer (and each vsock-guest call) gives up after this many seconds;
# a 4 MiB transfer takes a few seconds under TCG with a debug build.
STEP_TIMEOUT=40
export VSOCK_GUEST_TIMEOUT=$STEP_TIMEOUT

ms_now() { awk '{ printf "%d", $1 * 1000 }' /proc/uptime; }

# show FILE PREFIX: print FILE on the console, each line prefixed
show() { sed "s/^/E2E:   $2/" "$1" 2>/dev/null; }

# die REASON: fail, after printing the daemon's log (-v: debug level)
die() {
	echo "E2E: ---- daemon log ($DLOG) ----"
	tail -n 60 $DLOG 2>/dev/null | sed 's/^/E2E:   daemon: /'
	echo "E2E: ----"
	fail "$*"
}

# wait_bg PID SECONDS: wait for background job PID, bounded; its status
# (124 if it had to be killed)
wait_bg() {
	_i=0
	while kill -0 "$1" 2>/dev/null; do
		_i=$((_i + 1))
		if [ "$_i" -gt $(($2 * 10)) ]; then
			kill "$1" 2>/dev/null
			sleep 0.2
			kill -9 "$1" 2>/dev/null
			wait "$1"
			return 124
		fi
		sleep 0.1
	done
	wait "$1"
}

# wait_line FILE PATTERN PID SECONDS WHAT: wait until FILE has a line matching
# PATTERN, while background job PID lives
wait_line() {
	_i=0
	until grep -q "$2" "$1" 2>/dev/null; do
		_i=$((_i + 1))
		kill -0 "$3" 2>/dev/null || { wait "$3"; die "$5 exited (status $?) early: $(tr '\n' ' ' <"$1")"; }
		[ "$_i" -gt $(($4 * 10)) ] && die "$5: no '$2' within $4 s: $(tr '\n' ' ' <"$1")"
		sleep 0.1
	done
}

# ---- can the guest run the workspace binaries? -------------------------------
for p in vsock-guest vhost-device-vsock vhost-device-test-frontend; do
	command -v $p >/dev/null || fail "$p is not in the initramfs"
done
[ -e /lib64/ld-linux-x86-64.so.2 ] || fail "no /lib64/ld-linux-x86-64.so.2 in the guest (e2e/run copies what ldd names)"
out=$(vhost-device-vsock --version 2>&1) || fail "cannot run vhost-device-vsock --version: $out"
info "daemon: $out; front end: $(vhost-device-test-frontend --version 2>&1)"
: >/tmp/.writable 2>/dev/null || fail "/tmp is not writable"
vhost-device-vsock --help | grep -q -- --forward-cid || fail "the daemon in the initramfs has no --forward-cid"

# ---- the daemon -----------------------------------------------------------------
vhost-device-vsock --socket-path $SOCK --guest-cid 3 --uds-path /tmp/u.sock \
	--forward-cid 1 --forward-listen $H2G_PORT --forward-peers 1 -v >$DLOG 2>&1 &
daemon=$!
_i=0
until [ -S $SOCK ]; do
	_i=$((_i + 1))
	kill -0 $daemon 2>/dev/null || { wait $daemon; die "the daemon exited (status $?) before $SOCK appeared"; }
	[ "$_i" -gt 100 ] && die "no $SOCK within 10 s"
	sleep 0.1
done
info "daemon (pid $daemon) listening on $SOCK"

# A first front end that only negotiates: vhost-user handshake, memfd guest
# RAM shared with the daemon (memfd_create and MAP_SHARED in the guest).
t0=$(ms_now)
timeout 20 vhost-device-test-frontend --socket-path $SOCK info >/tmp/info.out 2>&1
rc=$?
show /tmp/info.out "info: "
[ $rc -eq 0 ] || die "vhost-device-test-frontend info failed (status $rc)"
info "front end negotiated in $(($(ms_now) - t0)) ms"

# ---- guest -> host: front end -> daemon -> AF_VSOCK 1:1234 -> vsock-guest sink
t0=$(ms_now)
vsock-guest sink $G2H_PORT $BYTES >/tmp/sink.out 2>&1 &
sink=$!
wait_line /tmp/sink.out 'listening on port' $sink 5 "vsock-guest sink"
timeout $STEP_TIMEOUT vhost-device-test-frontend --socket-path $SOCK \
	vsock-send --guest-cid 3 --port $G2H_PORT --bytes $BYTES >/tmp/fsend.out 2>/tmp/fsend.err
rc=$?
show /tmp/fsend.out "front end: "
show /tmp/fsend.err "front end: "
[ $rc -eq 0 ] || die "guest -> host: vhost-device-test-frontend vsock-send failed (status $rc): $(tr '\n' ' ' </tmp/fsend.err)"
wait_bg $sink $STEP_TIMEOUT
rc=$?
show /tmp/sink.out
[ $rc -eq 0 ] || die "guest -> host: vsock-guest sink failed (status $rc): $(grep -vE 'listening|accepted' /tmp/sink.out | tr '\n' ' ')"
sent=$(sed -n 's/^SENT \([0-9]*\) \([0-9a-f]\{8\}\)$/\1 \2/p' /tmp/fsend.out)
got=$(sed -n 's/.*received \([0-9]*\) bytes .* crc32 \([0-9a-f]\{8\}\)$/\1 \2/p' /tmp/sink.out)
[ -n "$sent" ] || die "guest -> host: no 'SENT <bytes> <crc32>' line from the front end"
[ "$sent" = "$BYTES ${sent#* }" ] || die "guest -> host: the front end sent '$sent', wanted $BYTES bytes"
[ "$got" = "$sent" ] || die "guest -> host: the front end sent '$sent' (bytes crc32), AF_VSOCK 1:$G2H_PORT received '$got'"
info "guest -> host: $BYTES bytes, crc32 ${sent#* } on both sides, $(($(ms_now) - t0)) ms in all"

# ---- host -> guest: vsock-guest source -> AF_VSOCK 1:7000 -> daemon -> front end
t0=$(ms_now)
vhost-device-test-frontend --socket-path $SOCK vsock-recv --guest-cid 3 --port $H2G_PORT \
	--bytes $BYTES --timeout $STEP_TIMEOUT >/tmp/frecv.out 2>/tmp/frecv.err &
frecv=$!
# The daemon's listener is up since it started, so this connect succeeds at
# once; the daemon passes the connection on once the front end's driver runs.
vsock-guest source 1 $H2G_PORT $BYTES $H2G_SEED >/tmp/source.out 2>&1
src_rc=$?
wait_bg $frecv $((STEP_TIMEOUT + 5))
rc=$?
show /tmp/source.out
show /tmp/frecv.out "front end: "
show /tmp/frecv.err "front end: "
[ $rc -eq 0 ] || die "host -> guest: vhost-device-test-frontend vsock-recv failed (status $rc): $(tr '\n' ' ' </tmp/frecv.err)"
sent=$(sed -n 's/.*sent \([0-9]*\) bytes .* crc32 \([0-9a-f]\{8\}\)$/\1 \2/p' /tmp/source.out)
got=$(sed -n 's/^RECEIVED \([0-9]*\) \([0-9a-f]\{8\}\)$/\1 \2/p' /tmp/frecv.out)
[ -n "$sent" ] || die "host -> guest: vsock-guest source failed (status $src_rc) before sending everything: $(tr '\n' ' ' </tmp/source.out)"
[ "$got" = "$sent" ] || die "host -> guest: AF_VSOCK 1:$H2G_PORT sent '$sent' (bytes crc32), the front end received '$got'"
info "host -> guest: $BYTES bytes, crc32 ${sent#* } on both sides, $(($(ms_now) - t0)) ms in all"
# vsock-guest source then waits for the daemon to close its end, which it
# must do once the front end that received the data has gone.
[ $src_rc -eq 0 ] || die "host -> guest: data intact, but vsock-guest source ended with status $src_rc: $(tail -n 1 /tmp/source.out)"

# ---- the daemon is still healthy ------------------------------------------------
kill -0 $daemon 2>/dev/null || { wait $daemon; die "the daemon exited (status $?) during the test"; }
if grep -E ' (ERROR|WARN) ' $DLOG >/tmp/daemon-errors; then
	show /tmp/daemon-errors "daemon: "
	die "the daemon logged errors or warnings: $(head -n 3 /tmp/daemon-errors | tr '\n' '|')"
fi
kill $daemon
wait_bg $daemon 5 || true

# ---- a peer not in --forward-peers is refused -----------------------------------
# A second daemon takes port 7001 from CID 4242 only; the loopback peer (CID 1)
# must see its connection closed at once and the front end no REQUEST.
SOCK2=/tmp/v2.sock
DLOG2=/tmp/daemon2.log
t0=$(ms_now)
vhost-device-vsock --socket-path $SOCK2 --guest-cid 3 --uds-path /tmp/u2.sock \
	--forward-listen 7001 --forward-peers 4242 -v >$DLOG2 2>&1 &
daemon2=$!
_i=0
until [ -S $SOCK2 ]; do
	_i=$((_i + 1))
	kill -0 $daemon2 2>/dev/null || { wait $daemon2; fail "the second daemon exited (status $?): $(tr '\n' ' ' <$DLOG2)"; }
	[ "$_i" -gt 100 ] && fail "no $SOCK2 within 10 s"
	sleep 0.1
done
# The front end runs the device; it must receive nothing.
vhost-device-test-frontend --socket-path $SOCK2 vsock-recv --guest-cid 3 --port 7001 \
	--bytes 1 --timeout $STEP_TIMEOUT >/tmp/frecv2.out 2>/tmp/frecv2.err &
frecv2=$!
vsock-guest source 1 7001 1 9 >/tmp/source2.out 2>&1
src_rc=$?
show /tmp/source2.out
[ $src_rc -eq 0 ] || fail "unlisted peer: vsock-guest source ended with status $src_rc (wanted its connection closed)"
grep -q 'unlisted peer' $DLOG2 || fail "unlisted peer: the daemon did not log the refusal: $(tr '\n' ' ' <$DLOG2)"
kill -0 $frecv2 2>/dev/null || fail "unlisted peer: the front end ended early: $(tr '\n' ' ' </tmp/frecv2.out /tmp/frecv2.err)"
grep -q RECEIVED /tmp/frecv2.out && fail "unlisted peer: the front end received data"
info "unlisted peer (CID 1, --forward-peers 4242): connection closed, nothing forwarded, $(($(ms_now) - t0)) ms"
kill $frecv2 $daemon2 2>/dev/null
wait_bg $daemon2 5 || true
