# vhost-device-gpio with a simulated chip on the host (sim:8 with names):
# the guest's gpio-virtio driver probes a gpiochip with the line names, and
# gpio-guest (e2e/tools/gpio-guest.c, GPIO character device uAPI v2) drives
# an output the host sees on the chip, reads an input the host drives, and
# waits for rising, falling and both-edge interrupts the host makes
# (e2e/tools/gpio-host.py, through the chip's control socket).
#
# Level interrupts are not tested here: no guest userspace interface asks
# for one (the character device and sysfs offer edges only), so only a
# kernel driver could; vhost-device-gpio/tests/daemon.rs tests them through
# the test front end, and gpio-libgpiod does against a real kernel chip.
#
# e2e-daemon: vhost-device-gpio --socket-path @DIR@/gpio.sock --device-list sim:8:led,button,irq-rise,irq-fall,irq-both,,spare,last -v
# e2e-socket: @DIR@/gpio.sock
# e2e-qemu: -chardev socket,id=gpio0,path=@DIR@/gpio.sock
# e2e-qemu: -device vhost-user-gpio-pci,chardev=gpio0
# e2e-orchestrator: exec python3 @E2E@/tools/gpio-host.py
# e2e-verify: ! grep -HE 'ERROR|WARN|panicked' daemon1-vhost-device-gpio.log
# e2e-timeout: 90

host_listen
chip=
for _t in $(seq 50); do
	chip=$(gpio-guest chips | awk '$2 ~ /^virtio/ { print $1 }')
	[ -n "$chip" ] && break
	sleep 0.1
done
[ -n "$chip" ] || fail "no gpiochip of a virtio device: $(gpio-guest chips | tr '\n' ';')"
dev=/dev/$chip
info "gpio: $chip: $(gpio-guest chips | grep "^$chip ")"
names=$(gpio-guest names $dev) || fail "cannot read the line names of $dev"
[ "$names" = "led,button,irq-rise,irq-fall,irq-both,,spare,last" ] || fail "line names of $dev: '$names'"
info "gpio: names $names"

# Output: line 0 driven high while gpio-guest holds it.
gpio-guest out $dev 0 1 30000 >/tmp/out.log 2>&1 &
outpid=$!
for _t in $(seq 100); do grep -q holding /tmp/out.log && break; sleep 0.1; done
grep -q holding /tmp/out.log || fail "gpio-guest out: $(cat /tmp/out.log)"
event out-set
wait_host out-seen 30
kill $outpid
wait $outpid 2>/dev/null
event out-released
info "gpio: output seen on the host's chip"

# Input: the host drives line 1.
for level in 1 0; do
	event in-$level-please
	wait_host in-$level-set 30
	v=$(gpio-guest get $dev 1) || fail "gpio-guest get: $v"
	[ "$v" = "$level" ] || fail "line 1 reads $v, the host drives $level"
done
info "gpio: input follows the host (1, 0)"

# edge LINE KIND COUNT EVENT: arm an edge interrupt, tell the host, and wait
# for COUNT events (the output goes to /tmp/edge-LINE.log)
edge_start() {
	gpio-guest edge $dev $1 $2 $3 30000 >/tmp/edge-$1.log 2>&1 &
	edgepid=$!
	for _t in $(seq 100); do grep -q armed /tmp/edge-$1.log && break; sleep 0.1; done
	grep -q armed /tmp/edge-$1.log || fail "gpio-guest edge $1 $2: $(cat /tmp/edge-$1.log)"
	event $4
}
edge_wait() {
	_i=0
	while kill -0 $edgepid 2>/dev/null; do
		_i=$((_i + 1))
		[ $_i -gt 400 ] && { kill $edgepid; fail "no edge event on line $1: $(cat /tmp/edge-$1.log)"; }
		sleep 0.1
	done
	wait $edgepid || fail "gpio-guest edge on line $1: $(tr '\n' ' ' </tmp/edge-$1.log)"
}

edge_start 2 rising 1 edge-rising-armed
edge_wait 2
grep -qx "event rising" /tmp/edge-2.log || fail "line 2: $(cat /tmp/edge-2.log)"
edge_start 3 falling 1 edge-falling-armed
edge_wait 3
grep -qx "event falling" /tmp/edge-3.log || fail "line 3: $(cat /tmp/edge-3.log)"
edge_start 4 both 2 edge-both-armed
for _t in $(seq 300); do grep -q "event rising" /tmp/edge-4.log && break; sleep 0.1; done
grep -q "event rising" /tmp/edge-4.log || fail "line 4: no rising edge: $(cat /tmp/edge-4.log)"
event edge-both-rose
edge_wait 4
[ "$(grep -c '^event ' /tmp/edge-4.log)" = 2 ] && grep -qx "event falling" /tmp/edge-4.log ||
	fail "line 4: $(tr '\n' ' ' </tmp/edge-4.log)"
event edges-done
info "gpio: rising, falling and both-edge interrupts from the host arrived"

if dmesg | grep -iE 'gpio.*(fail|incorrect|error)|virtio_gpio'; then
	fail "gpio-virtio complained in dmesg"
fi
