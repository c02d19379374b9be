# vhost-device-can on the software bus under QEMU >= 10.2 (QEMU has no
# vhost-user-can device: the generic -device vhost-user-test-device-pci with
# virtio-id=36, three queues and a 2-byte config space).  The guest's
# virtio_can driver makes can0; a host-side peer on the same bus
# (vhost-device-can-bus, run by tools/can-host.py) talks to it:
#   host -> guest: classic, RTR and FD frames arrive on can0 (candump);
#   guest -> host: cansend on can0, the host's dump prints them;
#   bus-off: the host injects one; the daemon sets the config status bit and
#     sends a config change through QEMU, and the guest's CAN stack reports
#     BUS-OFF (an error frame); down/up (STOP, START) clears it and frames
#     flow again.
#
# e2e-qemu-version: 10.2
# e2e-daemon: vhost-device-can --socket-path @DIR@/can.sock --bus @DIR@/canbus
# e2e-socket: @DIR@/can.sock
# e2e-require: test -x @BIN@/vhost-device-can-bus
# e2e-qemu: -chardev socket,id=can0,path=@DIR@/can.sock
# e2e-qemu: -device vhost-user-test-device-pci,chardev=can0,virtio-id=36,num_vqs=3,config_size=2
# e2e-orchestrator: exec python3 @E2E@/tools/can-host.py @BIN@/vhost-device-can-bus @DIR@/canbus
# e2e-verify: ! grep -HE 'ERROR|panicked' daemon1-vhost-device-can.log
# e2e-timeout: 90

FD=$(printf '%02X' $(seq 1 48))

# can_sockets: receive-list entries of can0 (frames and error frames)
can_sockets() { cat /proc/net/can/rcvlist_* 2>/dev/null | grep -c '^ *can0 '; }

# listen OUT ARGS...: candump ARGS in the background into OUT, once its
# socket is bound; sets $dump
listen() {
	_out=$1
	shift
	_before=$(can_sockets)
	candump "$@" >"$_out" 2>&1 &
	dump=$!
	_i=0
	until [ "$(can_sockets)" -gt "$_before" ]; do
		_i=$((_i + 1))
		[ "$_i" -gt 50 ] && fail "candump $* did not bind a socket: $(cat "$_out")"
		sleep 0.1
	done
}

# ---- the device ----------------------------------------------------------------
for p in cansend candump; do
	command -v $p >/dev/null || fail "$p not in the initramfs (the host needs can-utils)"
done
drv=/sys/bus/virtio/drivers/virtio_can
need_file $drv
bound=$(ls $drv | grep '^virtio' | head -n1)
[ -n "$bound" ] || fail "virtio_can is bound to no device ($(ls /sys/bus/virtio/devices/ 2>/dev/null | tr '\n' ' '))"
features=$(cat /sys/bus/virtio/devices/$bound/features)
info "virtio_can bound to $bound (device id $(cat /sys/bus/virtio/devices/$bound/device)), features ${features%"${features#????}"}..."
need_file /sys/class/net/can0
[ "$(cat /sys/class/net/can0/type)" = 280 ] || fail "can0 is not a CAN interface (type $(cat /sys/class/net/can0/type))"
# Feature bits 0 CLASSIC, 1 FD, 2 RTR_FRAMES, 3 LATE_TX_ACK: the daemon offers all four.
[ "${features%"${features#????}"}" = 1111 ] || fail "negotiated CAN features ${features%"${features#????}"}, wanted 1111"
[ "$(cat /sys/class/net/can0/mtu)" = 72 ] || fail "can0 has MTU $(cat /sys/class/net/can0/mtu), wanted 72 (CAN FD)"
ip link set can0 up 2>/tmp/err || fail "ip link set can0 up (START) failed: $(cat /tmp/err)"
info "can0 up: MTU 72 (CAN FD), flags $(cat /sys/class/net/can0/flags)"

# ---- host -> guest ---------------------------------------------------------------
listen /tmp/rx.out -L -n 3 -T 30000 can0
host_listen
event can-up
wait $dump || fail "candump on can0 failed (status $?): $(cat /tmp/rx.out)"
sed 's/^/E2E:   rx: /' /tmp/rx.out
grep -q ' can0 0A0#A0A1A2A3$' /tmp/rx.out || fail "no 0A0#A0A1A2A3 from the host"
grep -q ' can0 1BCDEF00#R3$' /tmp/rx.out || fail "no RTR frame 1BCDEF00#R3 from the host"
grep -q " can0 0A2##[0-9A-F]$FD\$" /tmp/rx.out || fail "no 48-byte FD frame 0A2 from the host"
info "host -> guest: classic, RTR and FD frames received on can0"

# ---- guest -> host ---------------------------------------------------------------
for frame in 123#DEADBEEF 12345678#R2 321##1$FD; do
	cansend can0 $frame 2>/tmp/err || fail "cansend can0 $frame failed: $(cat /tmp/err)"
done
event sent
wait_host got-frames 30
info "guest -> host: the host's dump printed the three frames"

# ---- bus-off and restart -----------------------------------------------------------
# Error frames only (no identifier passes 0~0), all error classes.
listen /tmp/err.out -L -n 1 -T 30000 'can0,0~0,#FFFFFFFF'
event busoff-ready
wait $dump || fail "no error frame on can0 after the host injected a bus-off (status $?): $(cat /tmp/err.out)"
sed 's/^/E2E:   error: /' /tmp/err.out
# CAN_ERR_FLAG | CAN_ERR_BUSOFF
grep -q ' can0 20000040#' /tmp/err.out || fail "the error frame is not a bus-off: $(cat /tmp/err.out)"
info "bus-off reported by the guest's CAN stack (config change through QEMU)"
ip link set can0 down 2>/tmp/err || fail "ip link set can0 down (STOP) failed: $(cat /tmp/err)"
ip link set can0 up 2>/tmp/err || fail "ip link set can0 up (START after bus-off) failed: $(cat /tmp/err)"
cansend can0 7FF#0102 2>/tmp/err || fail "cansend after the restart failed: $(cat /tmp/err)"
event restarted
wait_host got-restart 30
info "after down/up the controller is back on the bus"
