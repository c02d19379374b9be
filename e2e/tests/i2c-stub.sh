# vhost-device-i2c's real host backend (/dev/i2c-N through i2cdev) against
# a real kernel adapter, tested INSIDE the guest: the build host has no
# /dev/i2c-*, but the guest kernel has i2c-stub, a simulated SMBus-only
# adapter (I2C_FUNCS without I2C_FUNC_I2C: I2C_RDWR is refused, every
# transfer must become an SMBus command).  The daemon and a vhost-user front
# end that plays its guest (vhost-device-test-frontend i2c-transfer) both
# run in this guest; busybox's i2cget/i2cset talk to the stub directly, to
# check that what the front end wrote reached the stub's registers and the
# other way round.  No vhost-user device is attached to QEMU (plain boot).
#
# e2e-guest-binary: vhost-device-i2c vhost-device-test-frontend
# e2e-require: @BIN@/vhost-device-test-frontend --help | grep -q i2c-transfer
# e2e-timeout: 120

SOCK=/tmp/i2c.sock
DLOG=/tmp/daemon.log

show() { sed "s/^/E2E:   $2/" "$1" 2>/dev/null; }

die() {
	echo "E2E: ---- daemon log ($DLOG) ----"
	tail -n 40 $DLOG 2>/dev/null | sed 's/^/E2E:   daemon: /'
	echo "E2E: ----"
	fail "$*"
}

# fe MSGS...: one transfer through the daemon; its output in /tmp/fe.out
fe() {
	timeout 20 vhost-device-test-frontend --socket-path $SOCK i2c-transfer --indirect "$@" \
		>/tmp/fe.out 2>/tmp/fe.err || die "front end 'i2c-transfer $*' failed: $(tr '\n' ' ' </tmp/fe.err)"
}

# expect MSG LINE: message MSG of the last transfer printed exactly LINE
expect() {
	got=$(sed -n "s/^msg $1: //p" /tmp/fe.out)
	[ "$got" = "$2" ] || die "$3: message $1 gave '$got', wanted '$2' (all: $(tr '\n' '|' </tmp/fe.out))"
}

for p in vhost-device-i2c vhost-device-test-frontend i2cget i2cset; do
	command -v $p >/dev/null || fail "$p is not in the initramfs"
done
out=$(vhost-device-i2c --version 2>&1) || fail "cannot run vhost-device-i2c --version: $out"
info "daemon: $out"

# ---- the stub: chips at 0x1c and 0x1d; only 0x1c is given to the daemon's guest
ko=$(find /lib/modules -name 'i2c-stub.ko*' 2>/dev/null | head -n1)
[ -n "$ko" ] || fail "i2c-stub.ko is not in the initramfs"
insmod "$ko" chip_addr=0x1c,0x1d 2>/tmp/err || fail "insmod i2c-stub failed: $(cat /tmp/err)"
bus=
for d in /sys/bus/i2c/devices/i2c-*; do
	[ -f "$d/name" ] || continue
	case $(cat "$d/name") in "SMBus stub driver") bus=${d##*/i2c-} ;; esac
done
[ -n "$bus" ] || fail "no adapter named 'SMBus stub driver' after insmod"
need_file "/dev/i2c-$bus"
info "i2c-stub is i2c-$bus"

# ---- the daemon, naming the adapter by its sysfs name --------------------------------
vhost-device-i2c --socket-path $SOCK --device-list "SMBus stub driver:0x1c" -v >$DLOG 2>&1 &
daemon=$!
_i=0
until [ -S $SOCK ]; do
	_i=$((_i + 1))
	kill -0 $daemon 2>/dev/null || { wait $daemon; die "the daemon exited (status $?) before $SOCK appeared"; }
	[ "$_i" -gt 100 ] && die "no $SOCK within 10 s"
	sleep 0.1
done
grep -q 'SMBus only' $DLOG || die "the daemon did not see that i2c-$bus is SMBus-only"
info "daemon (pid $daemon) on $SOCK: $(grep -o 'i2c-[0-9]* .*' $DLOG | head -n1)"

# ---- write byte data through the daemon, read it on the stub directly ---------------
fe w2@0x1c 0x10 0x5a
expect 0 OK "write byte data"
val=$(i2cget -y "$bus" 0x1c 0x10) || die "i2cget on the stub failed"
[ "$val" = 0x5a ] || die "stub register 0x10 reads '$val' after the guest wrote 0x5a"
info "guest -> stub: write byte data 0x10 = $val"

# ---- set a register on the stub, read it through the daemon (W1 R1: read byte data)
i2cset -y "$bus" 0x1c 0x20 0x77 || die "i2cset on the stub failed"
fe w1@0x1c 0x20 r1@0x1c
expect 0 OK "read byte data"
expect 1 "OK 0x77" "read byte data"
info "stub -> guest: read byte data 0x20 = 0x77"

# ---- words: W3 is write word data, W1 R2 read word data ---------------------------
fe w3@0x1c 0x30 0x34 0x12
expect 0 OK "write word data"
val=$(i2cget -y "$bus" 0x1c 0x30 w) || die "i2cget word on the stub failed"
[ "$val" = 0x1234 ] || die "stub word 0x30 reads '$val' after the guest wrote 0x1234"
i2cset -y "$bus" 0x1c 0x32 0xbeef w || die "i2cset word on the stub failed"
fe w1@0x1c 0x32 r2@0x1c
expect 1 "OK 0xef 0xbe" "read word data"
info "words both ways: 0x30 = $val, 0x32 = 0xbeef"

# ---- I2C block write and read --------------------------------------------------------
fe w5@0x1c 0x40 1 2 3 4
expect 0 OK "I2C block write"
val=$(i2cget -y "$bus" 0x1c 0x42) || die "i2cget 0x42 failed"
[ "$val" = 0x03 ] || die "stub register 0x42 reads '$val' after a block write of 1 2 3 4 at 0x40"
fe w1@0x1c 0x40 r4@0x1c
expect 1 "OK 0x01 0x02 0x03 0x04" "I2C block read"
info "I2C block write/read at 0x40: 1 2 3 4"

# ---- send byte sets the stub's pointer, receive byte reads from it ----------------------
fe w1@0x1c 0x10
expect 0 OK "send byte"
fe r1@0x1c
expect 0 "OK 0x5a" "receive byte after send byte 0x10"

# ---- quick, an unlisted chip, and a pattern SMBus cannot express -----------------------
fe w0@0x1c
expect 0 OK "quick write to 0x1c"
fe w0@0x1d
expect 0 ERR "quick write to 0x1d (a stub chip, but not listed)"
fe r3@0x1c
expect 0 ERR "a 3-byte read without a command (no SMBus form)"
# The unlisted chip stops the transfer there, as a NACK would: the send
# byte before it runs, the read from 0x1d does not.
fe w1@0x1c 0x10 r1@0x1d
expect 0 OK "a transfer reaching an unlisted chip second"
expect 1 ERR "a transfer reaching an unlisted chip second"
val=$(i2cget -y "$bus" 0x1d 0x10) || die "i2cget 0x1d failed"
[ "$val" = 0x00 ] || die "chip 0x1d was changed: register 0x10 = '$val'"
info "quick 0x1c OK; 0x1d (unlisted) ERR; r3 ERR; w1@0x1c r1@0x1d: OK ERR"

# ---- the daemon is still healthy ----------------------------------------------------------
kill -0 $daemon 2>/dev/null || { wait $daemon; die "the daemon exited (status $?) during the test"; }
if grep -E ' (ERROR|WARN) ' $DLOG >/tmp/daemon-errors; then
	show /tmp/daemon-errors "daemon: "
	die "the daemon logged errors or warnings"
fi
kill $daemon
_i=0
while kill -0 $daemon 2>/dev/null; do
	_i=$((_i + 1))
	[ "$_i" -gt 50 ] && die "the daemon did not end within 5 s of SIGTERM"
	sleep 0.1
done
wait $daemon || die "the daemon exited with status $? after SIGTERM"
[ -e $SOCK ] && die "the daemon left $SOCK behind"

# ---- two devices on the one adapter, by number: each reaches only its own chip -------
if vhost-device-i2c --socket-path /tmp/bad.sock --socket-count 2 \
	--device-list "$bus:0x1c" --device-list "$bus:0x1c:0x1d" >/tmp/bad.out 2>&1; then
	die "a chip in two devices' lists was accepted"
fi
grep -q 'device 0 and device 1' /tmp/bad.out || die "sharing a chip: unclear error: $(cat /tmp/bad.out)"
SOCK=/tmp/two.sock
vhost-device-i2c --socket-path $SOCK --socket-count 2 \
	--device-list "$bus:0x1c" --device-list "$bus:0x1d" >$DLOG 2>&1 &
daemon=$!
_i=0
until [ -S ${SOCK}0 ] && [ -S ${SOCK}1 ]; do
	_i=$((_i + 1))
	kill -0 $daemon 2>/dev/null || { wait $daemon; die "the two-device daemon exited (status $?)"; }
	[ "$_i" -gt 100 ] && die "no ${SOCK}0 and ${SOCK}1 within 10 s"
	sleep 0.1
done
SOCK=/tmp/two.sock0
fe w0@0x1c w0@0x1d
expect 0 OK "device 0, its chip 0x1c"
expect 1 ERR "device 0, device 1's chip 0x1d"
SOCK=/tmp/two.sock1
fe w0@0x1d
expect 0 OK "device 1, its chip 0x1d"
fe w0@0x1c
expect 0 ERR "device 1, device 0's chip 0x1c"
fe w2@0x1d 0x10 0x42
expect 0 OK "device 1 writes its chip"
val=$(i2cget -y "$bus" 0x1d 0x10) || die "i2cget 0x1d failed"
[ "$val" = 0x42 ] || die "chip 0x1d register 0x10 reads '$val' after device 1 wrote 0x42"
info "two devices on i2c-$bus: each reaches only its own chip; a shared chip is refused at startup"
kill $daemon
wait $daemon || die "the two-device daemon exited with status $? after SIGTERM"
true
