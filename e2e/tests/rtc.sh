# vhost-device-rtc under QEMU 11 (-device vhost-user-rtc-pci): the guest's
# virtio_rtc driver probes; every clock of the default set becomes a PTP
# clock (/dev/ptp0..3: UTC-smeared, TAI, monotonic, boot time) and the
# UTC-smeared clock also /dev/rtc0, with alarms.  Each PTP clock is read
# around the host's own reading of the same clock (tools/rtc-host.py): the
# guest's readings must bracket the host's exactly.  /dev/rtc0 reads the
# time; an alarm 2 s ahead interrupts the guest (RTC_WKALM_SET, then read()
# gets RTC_AF); an alarm switched off does not.
#
# e2e-qemu-version: 11
# e2e-daemon: vhost-device-rtc --socket-path @DIR@/rtc.sock
# e2e-socket: @DIR@/rtc.sock
# e2e-qemu: -chardev socket,id=rtc0,path=@DIR@/rtc.sock
# e2e-qemu: -device vhost-user-rtc-pci,chardev=rtc0
# e2e-orchestrator: exec python3 @E2E@/tools/rtc-host.py
# e2e-verify: ! grep -HE 'ERROR|WARN|panicked' daemon1-vhost-device-rtc.log
# e2e-timeout: 90

command -v rtc-guest >/dev/null || fail "rtc-guest is not in the initramfs (GUEST_C_PROGRAMS in e2e/run)"

# The driver is bound to a virtio device of type 17.
drv=/sys/bus/virtio/drivers/virtio_rtc
need_file $drv
bound=$(ls $drv | grep '^virtio' | head -n1)
[ -n "$bound" ] || fail "virtio_rtc is bound to no device ($(ls /sys/bus/virtio/devices/ 2>/dev/null | tr '\n' ' '))"
info "virtio_rtc bound to $bound (device id $(cat /sys/bus/virtio/devices/$bound/device))"

# Four PTP clocks, in clock-id order, named "Virtio PTP type T/variant V".
expect_type() {   # expect_type N TYPE
	need_file /sys/class/ptp/ptp$1/clock_name
	_name=$(cat /sys/class/ptp/ptp$1/clock_name)
	case $_name in
		"Virtio PTP type $2/"*) info "ptp$1: $_name" ;;
		*) fail "ptp$1 is '$_name', expected type $2" ;;
	esac
	need_file /dev/ptp$1
}
expect_type 0 3
expect_type 1 1
expect_type 2 2
expect_type 3 2
[ -e /sys/class/ptp/ptp4 ] && fail "a fifth PTP clock: $(cat /sys/class/ptp/ptp4/clock_name)"

# host_time SEQ: the host's answer SEQ, once its whole line arrived
host_time() {
	_t=$(sed -n "s/^host $1 \([0-9][0-9]*\) end\r*$/\1/p" "$E2E_HOST_MSGS" 2>/dev/null)
	[ -n "$_t" ] && echo "$_t"
}

# Bracket each clock's host reading: A <= host <= B.
host_listen
seq=0
bracket() {   # bracket DEV NAME
	seq=$((seq + 1))
	_a=$(rtc-guest ptp-read "$1") || fail "reading $1 failed: $_a"
	event "time $seq $2"
	_i=0
	until _h=$(host_time $seq); do
		_i=$((_i + 1))
		[ "$_i" -gt 300 ] && fail "the host did not send its $2 time within 30 s"
		sleep 0.1
	done
	_b=$(rtc-guest ptp-read "$1") || fail "reading $1 failed: $_b"
	# busybox sh arithmetic is 64-bit: ns since 1970 fit until 2262.
	[ $((_a <= _h && _h <= _b)) -eq 1 ] ||
		fail "$1 ($2): guest read $_a then $_b, but the host read $_h in between"
	info "$1 ($2): $_a <= host $_h <= $_b (window $(( (_b - _a) / 1000000 )) ms)"
}
bracket /dev/ptp0 realtime
bracket /dev/ptp1 tai
bracket /dev/ptp2 monotonic
bracket /dev/ptp3 boottime

# PTP_SYS_OFFSET works, and the UTC clock agrees with the guest's system
# clock (which the kernel set from /dev/rtc0 at boot, to the second).
out=$(rtc-guest ptp-sysoff /dev/ptp0) || fail "PTP_SYS_OFFSET on /dev/ptp0: $out"
info "$out"
off=$(echo "$out" | sed -n 's/.*offset \(-*[0-9]*\) ns.*/\1/p')
[ -n "$off" ] || fail "no offset in '$out'"
[ "${off#-}" -lt 5000000000 ] || fail "the guest's system clock is $off ns away from the UTC clock"

# /dev/rtc0 is the UTC-smeared clock: it reads the host's time.
need_file /dev/rtc0
info "rtc0: $(cat /sys/class/rtc/rtc0/name), hctosys $(cat /sys/class/rtc/rtc0/hctosys 2>/dev/null)"
r=$(rtc-guest rtc-read /dev/rtc0) || fail "RTC_RD_TIME on /dev/rtc0: $r"
seq=$((seq + 1))
event "time $seq realtime"
_i=0
until h=$(host_time $seq); do
	_i=$((_i + 1))
	[ "$_i" -gt 300 ] && fail "the host did not send its time within 30 s"
	sleep 0.1
done
hs=$((h / 1000000000))
[ "$r" -le "$hs" ] || fail "/dev/rtc0 reads $r, after the host's later $hs"
[ $((hs - r)) -le 5 ] || fail "/dev/rtc0 reads $r, $((hs - r)) s behind the host's $hs"
info "/dev/rtc0 reads $r; the host then $hs"
hwclock -r -f /dev/rtc0 >/tmp/hwclock.out 2>&1 || fail "busybox hwclock -r: $(cat /tmp/hwclock.out)"
info "hwclock: $(cat /tmp/hwclock.out)"

# An alarm 2 s ahead interrupts the guest; one switched off does not.
out=$(rtc-guest rtc-alarm /dev/rtc0 2 30) || fail "RTC alarm: $(echo "$out" | tail -n1)"
echo "$out" | sed 's/^/E2E: /'
out=$(rtc-guest rtc-alarm-off /dev/rtc0 1 3) || fail "RTC alarm switched off: $(echo "$out" | tail -n1)"
echo "$out" | sed 's/^/E2E: /'
# A second alarm works as well (the device re-arms; the driver's buffers came back).
out=$(rtc-guest rtc-alarm /dev/rtc0 1 30) || fail "second RTC alarm: $(echo "$out" | tail -n1)"
echo "$out" | sed 's/^/E2E: /'
grep -q virtio /proc/interrupts && info "interrupts: $(grep -i virtio /proc/interrupts | tr -s ' ' | tr '\n' ';')"
