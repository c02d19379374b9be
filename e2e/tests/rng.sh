# vhost-device-rng: the guest sees a virtio-rng device and reads random data.
#
# e2e-daemon: vhost-device-rng --socket-path @DIR@/rng.sock
# e2e-socket: @DIR@/rng.sock
# e2e-qemu: -chardev socket,id=rng0,path=@DIR@/rng.sock
# e2e-qemu: -device vhost-user-rng-pci,chardev=rng0

sysfs=/sys/class/misc/hw_random
[ -e $sysfs/rng_current ] || sysfs=/sys/devices/virtual/misc/hw_random
need_file $sysfs/rng_current
cur=$(cat $sysfs/rng_current)
info "rng_available: $(cat $sysfs/rng_available 2>/dev/null); rng_current: $cur"
case $cur in
	*virtio*) ;;
	*) fail "rng_current is '$cur', not a virtio rng" ;;
esac
need_file /dev/hwrng

want=65536
dd if=/dev/hwrng of=/tmp/a bs=4096 count=16 iflag=fullblock 2>/tmp/dd.err ||
	fail "dd from /dev/hwrng failed: $(cat /tmp/dd.err)"
dd if=/dev/hwrng of=/tmp/b bs=4096 count=16 iflag=fullblock 2>/tmp/dd.err ||
	fail "second dd from /dev/hwrng failed: $(cat /tmp/dd.err)"
for f in /tmp/a /tmp/b; do
	size=$(wc -c <$f)
	[ "$size" -eq "$want" ] || fail "read $size bytes from /dev/hwrng, wanted $want"
done

# 64 KiB of good random data uses all 256 byte values; demand more than 200.
distinct=$(od -An -v -tu1 -w1 /tmp/a | sort -u | wc -l)
info "distinct byte values in $want bytes: $distinct"
[ "$distinct" -gt 200 ] || fail "data does not look random: only $distinct distinct byte values"
cmp -s /tmp/a /tmp/b && fail "two reads of /dev/hwrng returned identical data"
info "md5 $(md5sum </tmp/a | cut -d' ' -f1) and $(md5sum </tmp/b | cut -d' ' -f1)"
