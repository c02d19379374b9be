# vhost-device-rtc across a guest reboot (QMP system_reset): QEMU tells a
# vhost-user back end nothing but "rings stopped" and, on the next boot,
# "rings set up" (as around a pause). The first boot sets an RTC alarm 4 s
# ahead while the device holds the driver's alarmq buffers, then asks the
# orchestrator (tools/rtc-reset.py) for the reset. The second boot must see
# a device without that alarm: RTC_WKALM_RD reads it disabled, no interrupt
# comes when its time passes, the kernel logs no virtio ring error (a stale
# notification in the old kernel's buffers would be one, or worse), and a
# new alarm works. The daemon must have noticed the new rings.
#
# e2e-qemu-version: 11
# e2e-daemon: vhost-device-rtc --socket-path @DIR@/rtc.sock
# e2e-socket: @DIR@/rtc.sock
# e2e-qemu: -chardev socket,id=rtc0,path=@DIR@/rtc.sock
# e2e-qemu: -device vhost-user-rtc-pci,chardev=rtc0
# e2e-orchestrator: exec python3 @E2E@/tools/rtc-reset.py
# e2e-verify: grep -q 'set up anew' daemon1-vhost-device-rtc.log || { echo 'the daemon did not notice the new rings'; exit 1; }
# e2e-verify: ! grep -HE 'ERROR|WARN|panicked' daemon1-vhost-device-rtc.log
# e2e-timeout: 90

need_file /dev/rtc0
host_listen
event hello
_i=0
until boot=$(sed -n 's/^boot \([0-9][0-9]*\) end\r*$/\1/p' "$E2E_HOST_MSGS" | tail -n1) && [ -n "$boot" ]; do
	_i=$((_i + 1))
	[ "$_i" -gt 300 ] && fail "the orchestrator did not say which boot this is within 30 s"
	sleep 0.1
done
info "boot $boot"

if [ "$boot" -eq 1 ]; then
	out=$(rtc-guest rtc-set /dev/rtc0 4) || fail "setting the alarm: $out"
	info "$out"
	info "alarm: $(rtc-guest rtc-alarm-read /dev/rtc0)"
	event reset
	sleep 60
	fail "the machine was not reset"
fi

alarm=$(rtc-guest rtc-alarm-read /dev/rtc0) || fail "RTC_WKALM_RD: $alarm"
info "alarm after the reboot: $alarm"
case $alarm in
	"enabled 0 "*) ;;
	*) fail "the old kernel's alarm survived the reboot: $alarm" ;;
esac
out=$(rtc-guest rtc-quiet /dev/rtc0 6) || fail "$(echo "$out" | tail -n1)"
info "$out"
bad=$(dmesg | grep -iE 'virtio|rtc' | grep -iE 'bad|not a head|error|warn|broken|unexpected' || true)
[ -z "$bad" ] || fail "the kernel complains: $(echo "$bad" | head -n3 | tr '\n' ' ')"
out=$(rtc-guest rtc-alarm /dev/rtc0 1 30) || fail "a new alarm: $(echo "$out" | tail -n1)"
echo "$out" | sed 's/^/E2E: /'
