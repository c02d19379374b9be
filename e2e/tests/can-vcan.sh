# vhost-device-can's real SocketCAN backend (--device-list), tested INSIDE the
# guest: the build host has no AF_CAN, but the guest kernel has vcan and raw
# CAN sockets (see hostsim).  The daemon and a vhost-user front end that
# plays the daemon's guest (vhost-device-test-frontend can-send / can-recv)
# both run in this guest, and the "host" CAN side is the guest's vcan:
#   vcan -> driver: cansend on vcan0; the daemon's raw socket receives the
#     frames and the front end's rx buffers get them (classic, RTR, FD);
#   driver -> vcan: the front end sends; candump on vcan0 sees the frames, and
#     each request is answered OK only once the kernel echoed the frame to the
#     daemon's socket (LATE_TX_ACK through CAN_RAW_RECV_OWN_MSGS/MSG_CONFIRM);
#   FD from the MTU: vcan0 has MTU 72 and the device offers CAN FD; vcan1 has
#     MTU 16 and the device does not.
# No vhost-user device is attached to QEMU (plain boot).
#
# e2e-guest-binary: vhost-device-can vhost-device-test-frontend
# e2e-require: @BIN@/vhost-device-test-frontend --help | grep -q can-recv
# e2e-timeout: 120

SOCK=/tmp/can.sock
DLOG=/tmp/daemon.log
STEP_TIMEOUT=40
FD64=$(printf '%02X' $(seq 0 63))
FD12=112233445566778899AABBCC

# show FILE PREFIX: print FILE on the console, each line prefixed
show() { sed "s/^/E2E:   $2/" "$1" 2>/dev/null; }

# die REASON: fail, after printing the daemon's log
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

# raw_sockets: how many raw CAN sockets are bound to vcan0
raw_sockets() { grep -c '^ *vcan0 .* raw$' /proc/net/can/rcvlist_all 2>/dev/null; }

# ---- the interfaces and the daemon -------------------------------------------
for p in vhost-device-can vhost-device-test-frontend cansend candump; do
	command -v $p >/dev/null || fail "$p is not in the initramfs"
done
ip link add dev vcan0 type vcan 2>/tmp/err || fail "cannot create vcan0: $(cat /tmp/err)"
ip link set dev vcan0 mtu 72 2>/tmp/err || fail "cannot set the MTU of vcan0 to 72: $(cat /tmp/err)"
ip link add dev vcan1 type vcan 2>/tmp/err || fail "cannot create vcan1: $(cat /tmp/err)"
ip link set dev vcan1 mtu 16 2>/tmp/err || fail "cannot set the MTU of vcan1 to 16: $(cat /tmp/err)"
ip link set dev vcan0 up && ip link set dev vcan1 up || fail "cannot bring vcan0/vcan1 up"
info "vcan0 mtu $(cat /sys/class/net/vcan0/mtu), vcan1 mtu $(cat /sys/class/net/vcan1/mtu)"

vhost-device-can --socket-path $SOCK --socket-count 2 --device-list vcan0,vcan1 -v >$DLOG 2>&1 &
daemon=$!
_i=0
until [ -S ${SOCK}0 ] && [ -S ${SOCK}1 ]; do
	_i=$((_i + 1))
	kill -0 $daemon 2>/dev/null || { wait $daemon; die "the daemon exited (status $?) before its sockets appeared"; }
	[ "$_i" -gt 100 ] && die "no ${SOCK}0/${SOCK}1 within 10 s"
	sleep 0.1
done
info "daemon (pid $daemon) listening on ${SOCK}0 (vcan0) and ${SOCK}1 (vcan1)"

# ---- FD from the MTU ---------------------------------------------------------
# Feature bits: 0 CLASSIC, 1 FD, 2 RTR_FRAMES, 3 LATE_TX_ACK.
features() {
	timeout 20 vhost-device-test-frontend --socket-path "$1" info >/tmp/info.out 2>&1 ||
		{ show /tmp/info.out "info: "; die "vhost-device-test-frontend info on $1 failed"; }
	sed -n 's/^device features: *0x\([0-9a-f]*\)$/\1/p' /tmp/info.out
}
f0=$(features ${SOCK}0)
f1=$(features ${SOCK}1)
[ -n "$f0" ] && [ -n "$f1" ] || die "no 'device features' line from the front end"
[ $((0x$f0 & 0xF)) -eq 15 ] || die "vcan0 (MTU 72): CAN feature bits $((0x$f0 & 0xF)), wanted 15 (classic, FD, RTR, late ack)"
[ $((0x$f1 & 0xF)) -eq 13 ] || die "vcan1 (MTU 16): CAN feature bits $((0x$f1 & 0xF)), wanted 13 (no FD)"
info "features: vcan0 0x$f0 (CAN FD), vcan1 0x$f1 (classic only)"

# ---- vcan0 -> driver -----------------------------------------------------------
t0=$(date +%s)
vhost-device-test-frontend --socket-path ${SOCK}0 can-recv --count 3 \
	--timeout $STEP_TIMEOUT >/tmp/recv.out 2>/tmp/recv.err &
recv=$!
wait_line /tmp/recv.out '^STARTED$' $recv 20 "vhost-device-test-frontend can-recv"
for frame in 123#DEADBEEF 1ABCDEF0#R4 321##1$FD64; do
	cansend vcan0 $frame 2>/tmp/err || die "cansend vcan0 $frame failed: $(cat /tmp/err)"
done
wait_bg $recv $STEP_TIMEOUT
rc=$?
show /tmp/recv.out "front end: "
[ $rc -eq 0 ] || die "vcan0 -> driver: can-recv failed (status $rc): $(tr '\n' ' ' </tmp/recv.err)"
for want in "RECEIVED 123#DEADBEEF" "RECEIVED 1ABCDEF0#R4" "RECEIVED 321##0$FD64"; do
	grep -qx "$want" /tmp/recv.out || die "vcan0 -> driver: no '$want' line"
done
info "vcan0 -> driver: classic, RTR and a 64-byte FD frame arrived ($(($(date +%s) - t0)) s)"

# ---- driver -> vcan0 -----------------------------------------------------------
before=$(raw_sockets)
candump -L -n 3 -T 30000 vcan0 >/tmp/candump.out 2>&1 &
dump=$!
_i=0
until [ "$(raw_sockets)" -gt "$before" ]; do
	_i=$((_i + 1))
	[ "$_i" -gt 50 ] && die "candump did not bind a raw CAN socket to vcan0: $(cat /tmp/candump.out)"
	sleep 0.1
done
timeout $STEP_TIMEOUT vhost-device-test-frontend --socket-path ${SOCK}0 can-send \
	456#CAFE 0ABCDEF0#R2 654##1$FD12 >/tmp/send.out 2>/tmp/send.err
rc=$?
show /tmp/send.out "front end: "
[ $rc -eq 0 ] || die "driver -> vcan0: can-send failed (status $rc): $(tr '\n' ' ' </tmp/send.err)"
[ "$(grep -c ' 0$' /tmp/send.out)" -eq 3 ] || die "driver -> vcan0: not every frame answered OK"
wait_bg $dump 10
rc=$?
show /tmp/candump.out "candump: "
[ $rc -eq 0 ] || die "driver -> vcan0: candump failed (status $rc)"
grep -q ' vcan0 456#CAFE$' /tmp/candump.out || die "candump did not see 456#CAFE"
grep -q ' vcan0 0ABCDEF0#R2$' /tmp/candump.out || die "candump did not see the RTR frame 0ABCDEF0#R2"
grep -q " vcan0 654##[0-9A-F]$FD12\$" /tmp/candump.out || die "candump did not see the FD frame 654##.$FD12"
info "driver -> vcan0: classic, RTR and FD frames on vcan0, each acknowledged after the kernel's echo"

# ---- a frame too long for vcan1 (classic) is refused ----------------------------
timeout 20 vhost-device-test-frontend --socket-path ${SOCK}1 can-send 111##1$FD12 \
	>/tmp/send1.out 2>/tmp/send1.err && die "an FD frame was accepted on the classic-only vcan1"
grep -q '^SENT 111##0'"$FD12"' 1$' /tmp/send1.out || { show /tmp/send1.err "front end: "; die "no NOT_OK for the FD frame on vcan1"; }
info "vcan1: the FD frame was answered NOT_OK"

# ---- the daemon is still healthy ------------------------------------------------
kill -0 $daemon 2>/dev/null || { wait $daemon; die "the daemon exited (status $?) during the test"; }
if grep -E ' ERROR ' $DLOG >/tmp/daemon-errors; then
	show /tmp/daemon-errors "daemon: "
	die "the daemon logged errors: $(head -n 3 /tmp/daemon-errors | tr '\n' '|')"
fi
grep -q 'vcan0: MTU 72, CAN FD' $DLOG || die "the daemon did not log vcan0 as CAN FD"
kill $daemon
wait_bg $daemon 5 || true
