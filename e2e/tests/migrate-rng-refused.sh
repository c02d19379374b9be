# Live migration refused: QEMU marks vhost-user-rng unmigratable (as it does
# gpio, i2c, snd, vsock, rtc and the generic test device), so a QMP "migrate"
# must fail at once, naming the device, and leave everything as it was: the
# guest keeps running and still reads /dev/hwrng through the same daemon,
# which is still alive and logged no error or warning.
#
# The orchestrator (e2e/tools/migrate.py --refused-by) listens on the
# migration socket itself and fails if QEMU ever connects to it.
#
# e2e-daemon: vhost-device-rng --socket-path @DIR@/rng.sock
# e2e-socket: @DIR@/rng.sock
# e2e-qemu: -chardev socket,id=rng0,path=@DIR@/rng.sock
# e2e-qemu: -device vhost-user-rng-pci,chardev=rng0,id=rng
# e2e-orchestrator: exec python3 @E2E@/tools/migrate.py --refused-by vhost-user-rng
# e2e-verify: ! grep -HE 'ERROR|WARN|panicked' daemon1-vhost-device-rng.log
# e2e-timeout: 60

# read_hwrng FILE: 64 KiB from /dev/hwrng that look random
read_hwrng() {
	dd if=/dev/hwrng of="$1" bs=4096 count=16 iflag=fullblock 2>/tmp/dd.err ||
		fail "dd from /dev/hwrng failed: $(cat /tmp/dd.err)"
	[ "$(wc -c <"$1")" -eq 65536 ] || fail "read $(wc -c <"$1") bytes from /dev/hwrng, wanted 65536"
	_d=$(od -An -v -tu1 -w1 "$1" | sort -u | wc -l)
	[ "$_d" -gt 200 ] || fail "data from /dev/hwrng does not look random: $_d distinct byte values in 64 KiB"
}

sysfs=/sys/class/misc/hw_random
[ -e $sysfs/rng_current ] || sysfs=/sys/devices/virtual/misc/hw_random
need_file $sysfs/rng_current
case $(cat $sysfs/rng_current) in
	*virtio*) ;;
	*) fail "rng_current is '$(cat $sysfs/rng_current)', not a virtio rng" ;;
esac
need_file /dev/hwrng
read_hwrng /tmp/before
info "read 64 KiB from /dev/hwrng before the migration attempt"

host_listen
event migrate
wait_host refused 50
info "the host says QEMU refused to migrate"

read_hwrng /tmp/after
cmp -s /tmp/before /tmp/after && fail "/dev/hwrng returned the same 64 KiB before and after the refused migration"
info "read 64 KiB more from /dev/hwrng after the refused migration: the device still works"
