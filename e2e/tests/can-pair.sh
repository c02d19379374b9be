# Two Linux guests on one software CAN bus (the "two guests"): one
# vhost-device-can with two devices on --bus, VM 0 started by e2e/run and VM 1
# by tools/can-pair.py (with a console of its own, console1.log), both with
# QEMU's generic vhost-user device (>= 10.2, so the private QEMU).  Each guest
# brings can0 up, waits until the host says both are up ("go"), then sends a
# classic frame and a CAN FD frame carrying a random token of its own; each
# must receive the other's.  The orchestrator checks that what each guest got
# is the token the other one sent.
#
# e2e-qemu-version: 10.2
# e2e-daemon: vhost-device-can --socket-path @DIR@/can.sock --socket-count 2 --bus @DIR@/canbus
# e2e-socket: @DIR@/can.sock0
# e2e-socket: @DIR@/can.sock1
# e2e-qemu: -chardev socket,id=can0,path=@DIR@/can.sock@VM@
# e2e-qemu: -device vhost-user-test-device-pci,chardev=can0,virtio-id=36,num_vqs=3,config_size=2
# e2e-orchestrator: exec python3 @E2E@/tools/can-pair.py
# e2e-verify: ! grep -HE 'ERROR|WARN|panicked' daemon1-vhost-device-can.log
# e2e-timeout: 120

need_file /sys/class/net/can0
[ "$(cat /sys/class/net/can0/mtu)" = 72 ] || fail "can0 has MTU $(cat /sys/class/net/can0/mtu), wanted 72 (CAN FD)"
token=$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n' | tr a-f A-F)
[ ${#token} -eq 16 ] || fail "cannot make a token from /dev/urandom ('$token')"
info "token $token"

ip link set can0 up 2>/tmp/err || fail "ip link set can0 up failed: $(cat /tmp/err)"
# Own frames come back to candump too (the driver echoes them locally):
# two of ours and two of the other guest's.
candump -L -n 4 -T 60000 can0 >/tmp/rx.out 2>&1 &
dump=$!
_i=0
until grep -q '^ *can0 ' /proc/net/can/rcvlist_all 2>/dev/null; do
	_i=$((_i + 1))
	[ "$_i" -gt 50 ] && fail "candump did not bind a socket to can0: $(cat /tmp/rx.out)"
	sleep 0.1
done
host_listen
event up
wait_host go 60

cansend can0 100#$token 2>/tmp/err || fail "cansend can0 100#$token failed: $(cat /tmp/err)"
cansend can0 200##1${token}C0FFEE00 2>/tmp/err || fail "cansend of the FD frame failed: $(cat /tmp/err)"
wait $dump || fail "candump got fewer than 4 frames (status $?): $(tr '\n' '|' </tmp/rx.out)"
sed 's/^/E2E:   rx: /' /tmp/rx.out
other=$(sed -n 's/.* can0 100#\([0-9A-F]\{16\}\)$/\1/p' /tmp/rx.out | grep -v "^$token\$" | head -n1)
[ -n "$other" ] || fail "no classic frame from the other guest: $(tr '\n' '|' </tmp/rx.out)"
grep -q " can0 200##[0-9A-F]${other}C0FFEE00\$" /tmp/rx.out ||
	fail "no FD frame with the other guest's token $other: $(tr '\n' '|' </tmp/rx.out)"
info "got $other"
