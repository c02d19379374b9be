# vhost-device-scsi: three LUNs on image files seen through the guest's
# virtio-scsi + sd drivers: sizes and block sizes, a read-only LUN with a host
# pattern, O_DIRECT writes checked on the host, discard punching holes, an
# ext2 filesystem, a LUN reset, and no SCSI errors in dmesg.
#
# The images are made by e2e/tools/scsi-images, which also checks them after
# the guest passed (see there for the pattern and the "host-check" lines).
#
# e2e-prepare: @E2E@/tools/scsi-images prepare
# e2e-daemon: vhost-device-scsi --socket-path @DIR@/scsi.sock --num-queues 2 --lun @DIR@/lun0.img,serial=e2e-lun0 --lun @DIR@/lun1.img,ro,block-size=4096,rotational --lun @DIR@/lun2.img,block-size=4096
# e2e-socket: @DIR@/scsi.sock
# e2e-qemu: -chardev socket,id=scsi0,path=@DIR@/scsi.sock
# e2e-qemu: -device vhost-user-scsi-pci,chardev=scsi0,num_queues=2,param_change=off
# e2e-verify: @E2E@/tools/scsi-images verify
# e2e-timeout: 90

MiB=1048576

# ---- find the disks: H:C:T:L from sysfs, not the sdX order ----------------
_i=0
while [ "$(ls -d /sys/class/scsi_device/*/device/block/* 2>/dev/null | wc -l)" -lt 3 ]; do
	_i=$((_i + 1))
	[ "$_i" -gt 100 ] && fail "fewer than 3 SCSI disks after 10 s:" \
		"$(ls -d /sys/class/scsi_device/*/device/block/* 2>&1 | tr '\n' ' ')"
	sleep 0.1
done
sd0='' sd1='' sd2='' hct=''
for p in /sys/class/scsi_device/*/device/block/*; do
	hctl=${p#/sys/class/scsi_device/}
	hctl=${hctl%%/*}
	dev=${p##*/}
	[ -z "$hct" ] && hct=${hctl%:*}
	[ "${hctl%:*}" = "$hct" ] || fail "disks on two different targets: $hct and $hctl"
	info "scsi $hctl is $dev: $(tr -s ' ' <"$p/device/vendor")" \
		"$(tr -s ' ' <"$p/device/model") rev $(cat "$p/device/rev")"
	case ${hctl##*:} in
		0) sd0=$dev ;;
		1) sd1=$dev ;;
		2) sd2=$dev ;;
		*) fail "unexpected LUN in $hctl ($dev)" ;;
	esac
done
[ -n "$sd0" ] && [ -n "$sd1" ] && [ -n "$sd2" ] || fail "LUNs 0, 1, 2 not all found (got '$sd0' '$sd1' '$sd2')"
for d in $sd0 $sd1 $sd2; do
	need_file /dev/$d
	[ "$(cat /sys/block/$d/device/type)" = 0 ] || fail "$d has SCSI type $(cat /sys/block/$d/device/type), not 0 (disk)"
done

# ---- sizes, block sizes, read-only, rotational, serial ---------------------
check_disk() {   # check_disk DEV SECTORS LBS RO ROTATIONAL
	_q=/sys/block/$1/queue
	info "$1: size $(cat /sys/block/$1/size) sectors, logical block $(cat $_q/logical_block_size)," \
		"physical $(cat $_q/physical_block_size), ro $(cat /sys/block/$1/ro)," \
		"rotational $(cat $_q/rotational), write_cache '$(cat $_q/write_cache)', fua $(cat $_q/fua 2>/dev/null)," \
		"discard_max_bytes $(cat $_q/discard_max_bytes), discard_granularity $(cat $_q/discard_granularity)," \
		"max_sectors_kb $(cat $_q/max_sectors_kb)"
	[ "$(cat /sys/block/$1/size)" = "$2" ] || fail "$1 has $(cat /sys/block/$1/size) sectors, wanted $2"
	[ "$(cat $_q/logical_block_size)" = "$3" ] || fail "$1 logical block size $(cat $_q/logical_block_size), wanted $3"
	[ "$(cat /sys/block/$1/ro)" = "$4" ] || fail "$1 ro is $(cat /sys/block/$1/ro), wanted $4"
	[ "$(cat $_q/rotational)" = "$5" ] || fail "$1 queue/rotational is $(cat $_q/rotational), wanted $5"
}
check_disk $sd0 $((64 * MiB / 512)) 512 0 0
check_disk $sd1 $((32 * MiB / 512)) 4096 1 1
check_disk $sd2 $((16 * MiB / 512)) 4096 0 0

# VPD page 0x80 (unit serial number), read by the kernel at scan time.
vpd=/sys/block/$sd0/device/vpd_pg80
[ -f $vpd ] || fail "$vpd missing: the kernel did not read VPD page 0x80 (supported pages: $(od -An -tx1 /sys/block/$sd0/device/vpd_pg0 2>&1))"
# printable: the bytes of a file, non-printable ones as '.'
printable() { od -An -v -c "$1" | tr -d ' \n' | sed 's/\\[0-9][0-9]*/./g; s/\\././g'; }
grep -q 'e2e-lun0' $vpd || fail "LUN 0 serial (VPD 0x80) is '$(printable $vpd)' ($(od -An -tx1 $vpd)), wanted e2e-lun0"
info "LUN 0 VPD 0x80: '$(printable $vpd)'"

# pattern_block FIRST_RECORD: the host's pattern, 256 records of 16 bytes = 4 KiB
pattern_block() {
	awk -v s="$1" 'BEGIN { for (i = 0; i < 256; i++) printf "%015d\n", s + i }'
}
# check_pattern DEV BLOCK: 4 KiB block BLOCK of DEV holds the host's pattern
check_pattern() {
	dd if=/dev/$1 of=/tmp/blk bs=4096 skip=$2 count=1 iflag=direct 2>/tmp/err ||
		fail "reading block $2 of $1 failed: $(cat /tmp/err)"
	pattern_block $(($2 * 256)) >/tmp/want
	cmp -s /tmp/blk /tmp/want ||
		fail "block $2 of $1 does not hold the host's pattern: starts '$(head -c 32 /tmp/blk >/tmp/blk32; printable /tmp/blk32)'"
}

# ---- LUN 1 (read-only): the host's pattern --------------------------------
for b in 0 1 4097 8191; do check_pattern $sd1 $b; done
md5=$(dd if=/dev/$sd1 bs=1M iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
info "host-check lun1.img 0 $((32 * MiB)) $md5"
info "LUN 1 ($sd1): spot-checked 4 blocks of the pattern; whole-LUN md5 $md5 (compared on the host)"

# ---- LUN 0: O_DIRECT writes at known offsets, read back --------------------
dd if=/dev/urandom of=/tmp/big bs=1M count=4 2>/dev/null || fail "cannot make /tmp/big"
dd if=/tmp/big of=/dev/$sd0 bs=1M seek=40 oflag=direct conv=notrunc,fsync 2>/tmp/err ||
	fail "O_DIRECT write of 4 MiB at 40 MiB to $sd0 failed: $(cat /tmp/err)"
dd if=/dev/$sd0 of=/tmp/big.back bs=1M skip=40 count=4 iflag=direct 2>/tmp/err ||
	fail "O_DIRECT read of 4 MiB at 40 MiB from $sd0 failed: $(cat /tmp/err)"
cmp -s /tmp/big /tmp/big.back || fail "4 MiB at 40 MiB of $sd0 read back differ from what was written"
big_md5=$(md5sum </tmp/big | cut -d' ' -f1)
info "host-check lun0.img $((40 * MiB)) $((4 * MiB)) $big_md5"
# 7 sectors at an odd 512-byte sector, one write per sector.
dd if=/dev/urandom of=/tmp/small bs=512 count=7 2>/dev/null || fail "cannot make /tmp/small"
dd if=/tmp/small of=/dev/$sd0 bs=512 seek=100003 oflag=direct conv=notrunc,fsync 2>/tmp/err ||
	fail "O_DIRECT write of 7 sectors at sector 100003 to $sd0 failed: $(cat /tmp/err)"
dd if=/dev/$sd0 of=/tmp/small.back bs=512 skip=100003 count=7 iflag=direct 2>/tmp/err ||
	fail "O_DIRECT read of 7 sectors at sector 100003 of $sd0 failed: $(cat /tmp/err)"
cmp -s /tmp/small /tmp/small.back || fail "7 sectors at sector 100003 of $sd0 read back differ"
info "host-check lun0.img $((100003 * 512)) $((7 * 512)) $(md5sum </tmp/small | cut -d' ' -f1)"
info "LUN 0 ($sd0): 4 MiB at 40 MiB (bs=1M) and 7 sectors at sector 100003 (bs=512) written with O_DIRECT+fsync and read back"

# ---- LUN 2: discard 8 MiB at 4 MiB, reads back as zeros --------------------
[ "$(cat /sys/block/$sd2/queue/discard_max_bytes)" -gt 0 ] ||
	fail "$sd2 does not support discard (queue/discard_max_bytes is 0)"
for b in 0 1023 1024 2047 3072 4095; do check_pattern $sd2 $b; done
blkdiscard -o $((4 * MiB)) -l $((8 * MiB)) /dev/$sd2 2>/tmp/err ||
	fail "blkdiscard -o 4M -l 8M /dev/$sd2 failed: $(cat /tmp/err)"
dd if=/dev/$sd2 of=/tmp/disc bs=1M skip=4 count=8 iflag=direct 2>/tmp/err ||
	fail "reading the discarded range of $sd2 failed: $(cat /tmp/err)"
[ "$(wc -c </tmp/disc)" -eq $((8 * MiB)) ] || fail "short read of the discarded range of $sd2"
cmp -s -n $((8 * MiB)) /tmp/disc /dev/zero ||
	fail "discarded range of $sd2 does not read as zeros: $(cmp /tmp/disc /dev/zero 2>&1)"
# Outside the range the pattern is untouched.
for b in 0 1023 3072 4095; do check_pattern $sd2 $b; done
info "host-check lun2.img $((4 * MiB)) $((8 * MiB)) $(md5sum </tmp/disc | cut -d' ' -f1)"
for r in 0 12; do
	info "host-check lun2.img $((r * MiB)) $((4 * MiB))" \
		"$(dd if=/dev/$sd2 bs=1M skip=$r count=4 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)"
done
rm -f /tmp/disc
info "LUN 2 ($sd2): blkdiscard of 8 MiB at 4 MiB reads back as zeros, the rest keeps the pattern"

# ---- ext2 on the first 32 MiB of LUN 0 -------------------------------------
# (the O_DIRECT ranges above are beyond 32 MiB and stay untouched)
mke2fs -F -L e2e /dev/$sd0 32768 >/tmp/mkfs.out 2>&1 || fail "mke2fs /dev/$sd0 32768 failed: $(cat /tmp/mkfs.out)"
mkdir -p /mnt/e2e
mount -t ext2 /dev/$sd0 /mnt/e2e 2>/tmp/err || fail "mount -t ext2 /dev/$sd0 failed: $(cat /tmp/err)"
mkdir /mnt/e2e/e2e || fail "mkdir on the new filesystem failed"
echo 'hello from the e2e guest' >/mnt/e2e/e2e/hello.txt || fail "writing hello.txt failed"
dd if=/dev/urandom of=/mnt/e2e/e2e/random.bin bs=64k count=40 2>/dev/null || fail "writing random.bin failed"
fs_md5=$(md5sum </mnt/e2e/e2e/random.bin | cut -d' ' -f1)
sync
umount /mnt/e2e || fail "umount of $sd0 failed"
# Drop the page cache so that the second mount reads from the device.
echo 3 >/proc/sys/vm/drop_caches 2>/dev/null
mount -t ext2 -o ro /dev/$sd0 /mnt/e2e 2>/tmp/err || fail "second mount of $sd0 failed: $(cat /tmp/err)"
[ "$(cat /mnt/e2e/e2e/hello.txt)" = 'hello from the e2e guest' ] ||
	fail "hello.txt after remount holds '$(cat /mnt/e2e/e2e/hello.txt)'"
[ "$(md5sum </mnt/e2e/e2e/random.bin | cut -d' ' -f1)" = "$fs_md5" ] || fail "random.bin after remount differs"
umount /mnt/e2e || fail "second umount of $sd0 failed"
echo "E2E: fs-file-md5 $fs_md5"
info "ext2 (32 MiB) on $sd0: files written, unmounted, remounted and read back (checked again on the host)"

# ---- no SCSI errors so far ---------------------------------------------------
errs=$(dmesg | grep -iE 'I/O error|Sense Key|FAILED Result|critical|timing out|abort|tag#|print_req_error|EXT4-fs error|blk_update_request|hostbyte|driverbyte')
[ -z "$errs" ] || fail "SCSI errors in dmesg on the normal paths: $(echo "$errs" | tail -n 5 | tr '\n' '|')"
info "dmesg: no SCSI errors; scsi/sd lines:"
dmesg | grep -E 'scsi|sd[a-z]|virtio_scsi' | sed 's/^/E2E:   /'

# ---- LUN 1 refuses writes ----------------------------------------------------
dd if=/dev/zero of=/dev/$sd1 bs=4096 count=1 oflag=direct conv=notrunc,fsync 2>/tmp/err &&
	fail "an O_DIRECT write to the read-only LUN 1 ($sd1) succeeded"
info "dd write to read-only $sd1 failed as it should: $(tr '\n' ' ' </tmp/err)"
check_pattern $sd1 0
# The same past the block layer's read-only check: WRITE(10) of LBA 0, 1 block,
# sent with SG_IO.  The daemon must answer CHECK CONDITION, DATA PROTECT,
# WRITE PROTECTED (27h/00h).
command -v sg_raw >/dev/null || fail "sg_raw not in the initramfs (the host needs sg3-utils: run e2e/setup)"
head -c 4096 /dev/zero >/tmp/zero4k
sg_raw -R -s 4096 -i /tmp/zero4k /dev/$sd1 2a 00 00 00 00 00 00 00 01 00 >/tmp/sgraw.out 2>&1 &&
	fail "WRITE(10) to the read-only LUN 1 succeeded: $(tr '\n' ' ' </tmp/sgraw.out)"
grep -qi 'data protect' /tmp/sgraw.out && grep -qi 'write protected' /tmp/sgraw.out ||
	fail "WRITE(10) to read-only LUN 1 did not fail with DATA PROTECT/WRITE PROTECTED: $(tr '\n' ' ' </tmp/sgraw.out)"
info "sg_raw WRITE(10) to read-only $sd1: $(grep -iE 'status|sense key|additional sense' /tmp/sgraw.out | tr -s ' \n' '  ')"
check_pattern $sd1 0

# ---- REPORT LUNS ---------------------------------------------------------------
sg_luns /dev/$sd0 >/tmp/luns.out 2>&1 || fail "sg_luns /dev/$sd0 failed: $(tr '\n' ' ' </tmp/luns.out)"
luns=$(grep -cE '^ +[0-9a-f]{16}' /tmp/luns.out)
[ "$luns" -eq 3 ] || fail "REPORT LUNS did not list LUNs 0, 1 and 2: $(tr '\n' ' ' </tmp/luns.out)"
info "REPORT LUNS: $(tr -s ' \n' '  ' </tmp/luns.out)"

# ---- task management: LUN reset, then I/O still works ------------------------
command -v sg_reset >/dev/null || fail "sg_reset not in the initramfs (the host needs sg3-utils: run e2e/setup)"
sg_reset -d /dev/$sd0 >/tmp/reset.out 2>&1 || fail "sg_reset -d /dev/$sd0 failed: $(tr '\n' ' ' </tmp/reset.out)"
info "sg_reset -d /dev/$sd0: $(tr '\n' ' ' </tmp/reset.out) dmesg: $(dmesg | tail -n 2 | tr '\n' ' ')"
dd if=/dev/$sd0 of=/tmp/big.back bs=1M skip=40 count=4 iflag=direct 2>/tmp/err ||
	fail "O_DIRECT read from $sd0 after the LUN reset failed: $(cat /tmp/err)"
cmp -s /tmp/big /tmp/big.back || fail "data read from $sd0 after the LUN reset differ"
dd if=/tmp/small of=/dev/$sd0 bs=512 seek=100003 oflag=direct conv=notrunc,fsync 2>/tmp/err ||
	fail "O_DIRECT write to $sd0 after the LUN reset failed: $(cat /tmp/err)"
info "I/O on $sd0 works after the LUN reset"
errs=$(dmesg | grep -iE 'I/O error|FAILED Result|timing out|abort|print_req_error')
[ -z "$errs" ] || fail "errors in dmesg after the LUN reset: $(echo "$errs" | tail -n 5 | tr '\n' '|')"
