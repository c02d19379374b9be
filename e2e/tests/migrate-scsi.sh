# Live migration of a guest using vhost-device-scsi: the guest keeps writing
# numbered blocks to its disk (O_DIRECT + fsync, one 4 KiB block at a time)
# while the host migrates it from VM 0 (QEMU + daemon 1) to VM 1 (QEMU +
# daemon 2), both daemons serving the same image file.  After the switch it
# writes more on VM 1, then reads everything back and checks it: the blocks
# written before, during and after the migration.  Every block is also read
# back right after it is written.  The host checks the image
# afterwards (e2e/tools/migrate-disk verify).
#
# The orchestrator (e2e/tools/migrate.py) waits for the guest's event
# "migrate", starts VM 1 with VM 0's command line (@VM@ = 1: scsi1.sock, so
# daemon 2) plus -incoming, migrates over QMP, quits VM 0 once VM 1 runs,
# and sends the guest "migrated" through VM 1's control channel (/dev/ttyS1).
# QEMU migrates vhost-user-scsi only because the daemon offers
# VHOST_F_LOG_ALL and LOG_SHMFD (dirty logging of what it writes to guest
# memory); otherwise "migrate" fails with "vhost lacks VHOST_F_LOG_ALL".
#
# Daemon 1 polls its ring after each command (--poll-us 2000: long enough
# for the guest under TCG to post its next command within the window; -v
# logs the windows opening, which the verify step checks), with the
# driver's notifications off while it polls; daemon 2 does not poll. The
# guest's writes must go on on VM 1 after the rings are handed over from a
# polling daemon.
#
# e2e-prepare: @E2E@/tools/migrate-disk prepare
# e2e-daemon: vhost-device-scsi --socket-path @DIR@/scsi0.sock --lun @DIR@/disk.img,serial=e2e-migrate --poll-us 2000 -v
# e2e-daemon: vhost-device-scsi --socket-path @DIR@/scsi1.sock --lun @DIR@/disk.img,serial=e2e-migrate
# e2e-socket: @DIR@/scsi0.sock
# e2e-socket: @DIR@/scsi1.sock
# e2e-qemu: -chardev socket,id=scsi0,path=@DIR@/scsi@VM@.sock
# e2e-qemu: -device vhost-user-scsi-pci,id=scsi,chardev=scsi0,num_queues=1,param_change=off
# e2e-orchestrator: exec python3 @E2E@/tools/migrate.py
# e2e-verify: @E2E@/tools/migrate-disk verify
# e2e-verify: ! grep -HE 'ERROR|WARN|panicked' daemon1-vhost-device-scsi.log daemon2-vhost-device-scsi.log
# e2e-verify: grep -q 'polls its rings' daemon1-vhost-device-scsi.log
# e2e-timeout: 150

BLOCKS=8192   # 32 MiB image of 4 KiB blocks (e2e/tools/migrate-disk)
BEFORE=20     # blocks written before asking the host to migrate
AFTER=20      # blocks written on VM 1 after the host said "migrated"

# ---- the disk ---------------------------------------------------------------
_i=0
while [ -z "$(ls /sys/class/scsi_device/*/device/block/ 2>/dev/null)" ]; do
	_i=$((_i + 1))
	[ "$_i" -gt 100 ] && fail "no SCSI disk after 10 s: $(ls /sys/class/scsi_device/ 2>&1 | tr '\n' ' ')"
	sleep 0.1
done
sd=$(ls /sys/class/scsi_device/*/device/block/ | head -n1)
need_file /dev/$sd
[ "$(cat /sys/block/$sd/size)" = $((BLOCKS * 8)) ] ||
	fail "$sd has $(cat /sys/block/$sd/size) sectors, wanted $((BLOCKS * 8)) (32 MiB)"
grep -q e2e-migrate /sys/block/$sd/device/vpd_pg80 2>/dev/null ||
	fail "$sd is not the daemon's LUN (VPD 0x80 serial is not e2e-migrate)"
tag=$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')
[ ${#tag} -eq 8 ] || fail "cannot draw a random tag ('$tag')"
info "disk $sd, tag $tag"

# ---- the writer: blocks 0, 1, 2, ... until /tmp/stop exists ------------------
# Each block is written with O_DIRECT + fsync (WRITE, SYNCHRONIZE CACHE) and
# read back with O_DIRECT (READ) at once.
# make_block B FILE: block B of the pattern (see e2e/tools/migrate-disk)
make_block() {
	awk -v t="$tag" -v b="$1" 'BEGIN { for (r = 0; r < 128; r++) printf "%s %011d %010d\n", t, b, r }' >"$2"
}
writer() {
	_b=0
	while [ ! -e /tmp/stop ]; do
		if [ $_b -ge $BLOCKS ]; then
			echo "the image is full ($BLOCKS blocks) but the test did not stop the writer" >/tmp/writer.err
			return 1
		fi
		make_block $_b /tmp/blk
		if ! dd if=/tmp/blk of=/dev/$sd bs=4096 seek=$_b count=1 oflag=direct conv=notrunc,fsync 2>/tmp/writer.dd; then
			echo "O_DIRECT write of block $_b failed: $(tr '\n' ' ' </tmp/writer.dd)" >/tmp/writer.err
			return 1
		fi
		# Read it straight back: the daemon writes the data into guest
		# memory, so during the migration it must log those pages dirty.
		if ! dd if=/dev/$sd of=/tmp/rblk bs=4096 skip=$_b count=1 iflag=direct 2>/tmp/writer.dd; then
			echo "O_DIRECT read of block $_b failed: $(tr '\n' ' ' </tmp/writer.dd)" >/tmp/writer.err
			return 1
		fi
		if ! cmp -s /tmp/blk /tmp/rblk; then
			echo "block $_b read back right after writing it differs (starts '$(head -c 31 /tmp/rblk | tr -c '[:print:]' '.')')" >/tmp/writer.err
			return 1
		fi
		_b=$((_b + 1))
		echo $_b >/tmp/written
	done
}
written() {   # blocks written so far
	_n=$(cat /tmp/written 2>/dev/null)
	echo "${_n:-0}"
}
writer_ok() {   # fail if the writer stopped by itself
	kill -0 $wpid 2>/dev/null || fail "the writer stopped after $(written) blocks: $(cat /tmp/writer.err 2>/dev/null)"
}
wait_written() {   # wait_written N SECONDS
	_i=0
	while [ "$(written)" -lt "$1" ]; do
		writer_ok
		_i=$((_i + 1))
		[ "$_i" -gt $(($2 * 10)) ] && fail "only $(written) of $1 blocks written after $2 s"
		sleep 0.1
	done
}

host_listen
rm -f /tmp/stop /tmp/written /tmp/writer.err
writer &
wpid=$!
wait_written $BEFORE 60
n0=$(written)
info "$n0 blocks written; asking the host to migrate"
event migrate

# The writer goes on while the host migrates; wait for its word (bounded).
_i=0
until host_said migrated; do
	writer_ok
	_i=$((_i + 1))
	[ "$_i" -gt 1000 ] && fail "the host did not say 'migrated' within 100 s (see orchestrator.log)"
	sleep 0.1
done
n1=$(written)
info "the host says the guest now runs on VM 1; $n1 blocks written"
wait_written $((n1 + AFTER)) 60
touch /tmp/stop
wait $wpid || fail "the writer failed: $(cat /tmp/writer.err 2>/dev/null)"
n=$(written)
info "wrote and read back $n blocks: $n0 before asking for the migration, $((n1 - n0)) between asking" \
	"and hearing it was done, $((n - n1)) on VM 1 afterwards"

# ---- read everything back on VM 1 -----------------------------------------------
awk -v t="$tag" -v n="$n" 'BEGIN { for (b = 0; b < n; b++) for (r = 0; r < 128; r++) printf "%s %011d %010d\n", t, b, r }' >/tmp/want
dd if=/dev/$sd of=/tmp/got bs=4096 count=$n iflag=direct 2>/tmp/err ||
	fail "O_DIRECT read of the $n blocks failed: $(cat /tmp/err)"
if ! cmp -s /tmp/want /tmp/got; then
	_at=$(cmp /tmp/want /tmp/got 2>&1 | sed -n 's/.* byte \([0-9]*\).*/\1/p')
	_blk=$(( (${_at:-1} - 1) / 4096 ))
	dd if=/tmp/got of=/tmp/bad bs=4096 skip=$_blk count=1 2>/dev/null
	fail "block $_blk read back on VM 1 differs from what was written (first difference at byte ${_at:-?};" \
		"it starts '$(head -c 31 /tmp/bad | tr -c '[:print:]' '.')'; blocks $n0..$n1 were written during the migration)"
fi
md5=$(md5sum </tmp/got | cut -d' ' -f1)
info "all $n blocks read back on VM 1 hold what was written"
echo "E2E: migrate-disk $tag $n $md5"

errs=$(dmesg | grep -iE 'I/O error|Sense Key|FAILED Result|timing out|abort|reset|print_req_error|hostbyte|driverbyte')
[ -z "$errs" ] || fail "SCSI errors in dmesg: $(echo "$errs" | tail -n 5 | tr '\n' '|')"
