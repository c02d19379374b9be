# vhost-device-vsock: guest AF_VSOCK stream sockets in the hybrid convention,
# with checksummed 8 MiB transfers both ways, each side sending with single
# write() calls of 2 MiB:
#   host -> guest: the guest listens on port 5000; the host helper connects to
#     @DIR@/vsock.sock, writes "CONNECT 5000\n" (retrying, bounded, until the
#     guest listens), reads "OK <port>\n" and sends;
#   guest -> host: the guest connects to CID 2 port 1234, which the daemon
#     passes to the host helper listening on @DIR@/vsock.sock_1234.
# The sender shuts down its sending side after the data; the receiver checks
# the data against the pattern and replies "OK <bytes> <crc32>", which the
# sender checks.  The host helpers write h2g.result / g2h.result, and the
# verify step checks those against the guest's "vsock-check" lines.  Last, a
# connect to a host port nobody listens on must be refused (RST), promptly.
#
# Guest side: e2e/tools/vsock-guest.c; host side: e2e/tools/vsock-host.py.
#
# e2e-host: exec python3 @E2E@/tools/vsock-host.py g2h @DIR@/vsock.sock_1234 8388608 1 @DIR@/g2h.result
# e2e-host: exec python3 @E2E@/tools/vsock-host.py h2g @DIR@/vsock.sock 5000 8388608 2 2097152 @DIR@/h2g.result
# e2e-daemon: vhost-device-vsock --socket-path @DIR@/vhost-user-vsock.sock --guest-cid 3 --uds-path @DIR@/vsock.sock -v
# e2e-socket: @DIR@/vhost-user-vsock.sock
# e2e-socket: @DIR@/vsock.sock
# e2e-socket: @DIR@/vsock.sock_1234
# e2e-qemu: -chardev socket,id=vs0,path=@DIR@/vhost-user-vsock.sock
# e2e-qemu: -device vhost-user-vsock-pci,chardev=vs0
# e2e-verify: python3 @E2E@/tools/vsock-host.py verify console.log g2h.result h2g.result
# e2e-timeout: 60

MiB=1048576
BYTES=$((8 * MiB))
CHUNK=$((2 * MiB))
G2H_PORT=1234 G2H_SEED=1   # keep in sync with the e2e-host lines above
H2G_PORT=5000 H2G_SEED=2

# Every vsock-guest call gives up after this many seconds (a transfer takes
# well under one second under TCG).
export VSOCK_GUEST_TIMEOUT=15

command -v vsock-guest >/dev/null || fail "vsock-guest not in the initramfs (e2e/run builds it from e2e/tools/vsock-guest.c)"

# ---- the device ------------------------------------------------------------
need_file /dev/vsock
drv=/sys/bus/virtio/drivers/vmw_vsock_virtio_transport
[ -d $drv ] || fail "no virtio vsock driver in sysfs ($drv)"
bound=$(ls -d $drv/virtio* 2>/dev/null | head -n1)
[ -n "$bound" ] || fail "the virtio vsock driver is bound to no device"
cid=$(vsock-guest cid) || fail "cannot read the local CID: $cid"
info "virtio vsock: ${bound##*/} (device id $(cat $bound/device)), local CID $cid"
[ "$cid" = 3 ] || fail "local CID is '$cid', the daemon was given --guest-cid 3"

ms_now() { awk '{ printf "%d", $1 * 1000 }' /proc/uptime; }

# wait_bg PID SECONDS: wait for background job PID, bounded; its status
wait_bg() {
	_i=0
	while kill -0 "$1" 2>/dev/null; do
		_i=$((_i + 1))
		if [ "$_i" -gt $(($2 * 10)) ]; then
			kill "$1" 2>/dev/null
			wait "$1"
			return 124
		fi
		sleep 0.1
	done
	wait "$1"
}

# ---- host -> guest -----------------------------------------------------------
# Listen first; the host helper keeps retrying its CONNECT until this is up.
# (This transfer comes first so that the host helper, which records its
# result only after the guest's reply, has finished long before the guest
# powers off and the harness stops it.)
t0=$(ms_now)
vsock-guest recv $H2G_PORT $BYTES $H2G_SEED >/tmp/recv.out 2>&1 &
recv_pid=$!
_i=0
until grep -q 'listening on port' /tmp/recv.out; do
	_i=$((_i + 1))
	kill -0 $recv_pid 2>/dev/null || { wait $recv_pid; fail "vsock-guest recv exited (status $?) before listening: $(tr '\n' ' ' </tmp/recv.out)"; }
	[ "$_i" -gt 50 ] && fail "vsock-guest recv did not listen within 5 s: $(tr '\n' ' ' </tmp/recv.out)"
	sleep 0.1
done
wait_bg $recv_pid $((VSOCK_GUEST_TIMEOUT + 5))
rc=$?
sed 's/^/E2E:   /' /tmp/recv.out
[ $rc -eq 0 ] || fail "host -> guest: vsock-guest recv failed (status $rc): $(grep -vE 'listening|accepted' /tmp/recv.out | tr '\n' ' ')"
crc=$(sed -n 's/.*replied .OK [0-9]* \([0-9a-f]*\).*/\1/p' /tmp/recv.out)
info "vsock-check h2g $BYTES $crc"
info "host -> guest: $BYTES bytes checked, $(($(ms_now) - t0)) ms from starting the listener to the reply"

# ---- guest -> host -----------------------------------------------------------
t0=$(ms_now)
vsock-guest send 2 $G2H_PORT $BYTES $G2H_SEED $CHUNK >/tmp/send.out 2>&1
rc=$?
sed 's/^/E2E:   /' /tmp/send.out
[ $rc -eq 0 ] || fail "guest -> host: vsock-guest send failed (status $rc): $(tr '\n' ' ' </tmp/send.out)"
crc=$(sed -n 's/.*sent .* crc32 \([0-9a-f]*\)$/\1/p' /tmp/send.out)
info "vsock-check g2h $BYTES $crc"
info "guest -> host: $BYTES bytes checked, $(($(ms_now) - t0)) ms in all"

# ---- refused connect -----------------------------------------------------------
# Nobody listens on @DIR@/vsock.sock_1235: the daemon must answer with RST.
vsock-guest refused 2 1235 >/tmp/refused.out 2>&1
rc=$?
sed 's/^/E2E:   /' /tmp/refused.out
[ $rc -eq 0 ] || fail "connect to host port 1235 (no listener) was not refused: $(tr '\n' ' ' </tmp/refused.out)"

errs=$(dmesg | grep -iE 'vsock|virtio' | grep -iE 'error|fail|bug|warn')
[ -z "$errs" ] || fail "vsock errors in dmesg: $(echo "$errs" | tail -n 5 | tr '\n' '|')"
