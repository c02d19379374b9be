# vhost-device-gpio's real backend (libgpiod v2) against a real kernel GPIO
# chip, INSIDE the guest: the build host has no /dev/gpiochip*, but the
# guest kernel has gpio-sim.  The test makes a 64-line gpio-sim chip with
# named lines (configfs), serves it with vhost-device-gpio, and drives the
# daemon with vhost-device-test-frontend's virtio-gpio driver (`gpio`, a
# command shell on a pair of FIFOs), as the daemon's guest; gpio-sim's
# sysfs `pull` attributes are the outside world:
#   names from the chip; an output seen in sim_gpioN/value; an input that
#   follows the pull; a rising-edge interrupt; a level-high interrupt that
#   fires at once while active, again on re-queue, not while inactive, and
#   on the edge into the active level; IRQ type NONE returning the buffer
#   INVALID; 64 armed lines (64 line requests in the daemon's epoll) that
#   leave the daemon idle; SIGTERM.
# No vhost-user device is attached to QEMU (plain boot).
#
# e2e-guest-binary: vhost-device-gpio vhost-device-test-frontend
# e2e-require: @BIN@/vhost-device-test-frontend --help | grep -q gpio
# e2e-timeout: 120

SOCK=/tmp/g.sock
DLOG=/tmp/daemon.log

die() {
	echo "E2E: ---- daemon log ($DLOG) ----"
	tail -n 40 $DLOG 2>/dev/null | sed 's/^/E2E:   daemon: /'
	echo "E2E: ---- front end stderr ----"
	sed 's/^/E2E:   fe: /' /tmp/fe.err 2>/dev/null
	fail "$*"
}

# The chip: 64 lines, the first four named.
cfg=/sys/kernel/config/gpio-sim
[ -d $cfg ] || fail "$cfg missing (configfs not mounted or no CONFIG_GPIO_SIM)"
mkdir $cfg/lg $cfg/lg/bank0 || fail "cannot make a gpio-sim device"
echo 64 >$cfg/lg/bank0/num_lines || fail "cannot set num_lines"
n=0
for name in led button irq-edge irq-level; do
	mkdir $cfg/lg/bank0/line$n && echo $name >$cfg/lg/bank0/line$n/name || fail "cannot name line $n"
	n=$((n + 1))
done
echo 1 >$cfg/lg/live || fail "cannot switch the gpio-sim device live"
chip=$(cat $cfg/lg/bank0/chip_name)
gdir=/sys/bus/gpio/devices/$chip
label=$(gpio-guest chips | awk -v c=$chip '$1 == c { print $2 }')
[ -n "$label" ] || fail "no label for $chip: $(gpio-guest chips | tr '\n' ';')"
pull() { echo pull-$2 >$gdir/sim_gpio$1/pull || die "cannot pull line $1 $2"; }
info "libgpiod: /dev/$chip ($label), 64 lines"

# The daemon, naming the chip by its label.
/usr/bin/vhost-device-gpio --version >/dev/null || fail "vhost-device-gpio does not run in the guest"
vhost-device-gpio --socket-path $SOCK --device-list "$label" -v >$DLOG 2>&1 &
dpid=$!
for _t in $(seq 100); do [ -S $SOCK ] && break; kill -0 $dpid 2>/dev/null || break; sleep 0.1; done
[ -S $SOCK ] || die "the daemon did not listen on $SOCK"

# The front end, as the daemon's guest: commands on fd 3, answers on fd 4.
mkfifo /tmp/fe.in /tmp/fe.out
vhost-device-test-frontend --socket-path $SOCK gpio --timeout 20 </tmp/fe.in >/tmp/fe.out 2>/tmp/fe.err &
fepid=$!
exec 3>/tmp/fe.in 4</tmp/fe.out
# fe COMMAND: send, read the answer into $ans, fail unless it starts with ok
fe() {
	echo "$*" >&3
	read -t 40 -r ans <&4 || die "front end: no answer to '$*'"
	case $ans in ok*) ;; *) die "front end: '$*' -> '$ans'" ;; esac
}
# fence: every eventq buffer posted before has been taken by the daemon (held
# or answered): a buffer for line 5, which never has an interrupt, comes back
# INVALID at once, and the daemon takes the queue's buffers in order
fence() {
	fe arm 5
	fe wait 5
	[ "$ans" = "ok invalid" ] || die "fence: $ans"
}
# settle: two request round trips (weaker: for the 64-line step, which has no
# line left for a fence)
settle() { fe getdir 0; fe getdir 0; }

fe info
[ "$ans" = "ok ngpio=64 names_size=$((4 + 7 + 9 + 10 + 60))" ] || die "info: $ans"
fe names
case $ans in "ok led,button,irq-edge,irq-level,,"*) ;; *) die "names: $ans" ;; esac
info "libgpiod: config and names from the chip"

# Output.
fe set 0 1
fe dir 0 out
[ "$(cat $gdir/sim_gpio0/value)" = 1 ] || die "line 0 output 1 reads $(cat $gdir/sim_gpio0/value) on the chip"
fe set 0 0
[ "$(cat $gdir/sim_gpio0/value)" = 0 ] || die "line 0 output 0 reads 1 on the chip"
info "libgpiod: output driven on the chip"

# Input.
fe dir 1 in
pull 1 up
fe get 1
[ "$ans" = "ok 1" ] || die "line 1 pulled up: $ans"
pull 1 down
fe get 1
[ "$ans" = "ok 0" ] || die "line 1 pulled down: $ans"
info "libgpiod: input follows the pull"

# Rising edge.
pull 2 down
fe irq 2 rising
fe arm 2
fence
fe peek
[ "$ans" = "ok" ] || die "edge interrupt fired with no edge: $ans"
pull 2 up
fe wait 2
[ "$ans" = "ok valid" ] || die "rising edge: $ans"
info "libgpiod: rising-edge interrupt"

# Level high (emulated on edge events).
pull 3 up
fe irq 3 high
fe arm 3
fe wait 3
[ "$ans" = "ok valid" ] || die "active level: $ans"
fe arm 3
fe wait 3
[ "$ans" = "ok valid" ] || die "still-active level on re-queue: $ans"
pull 3 down
fe arm 3
fence
fe peek
[ "$ans" = "ok" ] || die "inactive level fired: $ans"
pull 3 up
fe wait 3
[ "$ans" = "ok valid" ] || die "edge into the active level: $ans"
info "libgpiod: level-high interrupt (at once, on re-queue, on the edge into it)"

# NONE returns the held buffer.
fe arm 2
fence
fe irq 2 none
fe wait 2
[ "$ans" = "ok invalid" ] || die "IRQ type NONE: $ans"

# 64 armed lines: 64 line requests in the daemon's epoll, no CPU when idle.
# (Line 0, an output, is released first: an output takes no interrupt.)
fe dir 0 none
fe irq 2 both
l=0
while [ $l -lt 64 ]; do
	[ $l -ne 2 ] && fe irq $l both
	fe arm $l
	l=$((l + 1))
done
settle
fe peek
[ "$ans" = "ok" ] || die "interrupts fired with no edge: $ans"
fds=$(ls /proc/$dpid/fd | wc -l)
[ "$fds" -gt 64 ] || die "the daemon has $fds descriptors, fewer than 64 line requests"
ticks() { awk '{ print $14 + $15 }' /proc/$dpid/stat; }
t0=$(ticks)
sleep 2
t1=$(ticks)
[ $((t1 - t0)) -le 2 ] || die "the daemon used $((t1 - t0)) ticks in 2 s with 64 armed lines"
pull 40 up
fe wait 40
[ "$ans" = "ok valid" ] || die "line 40 of 64 armed: $ans"
info "libgpiod: 64 armed lines, daemon idle ($((t1 - t0)) ticks in 2 s, $fds descriptors); line 40 fires"

# The front end leaves; the daemon releases the lines and ends on SIGTERM.
echo quit >&3
exec 3>&- 4<&-
wait $fepid || die "the front end failed"
kill -TERM $dpid
for _t in $(seq 50); do kill -0 $dpid 2>/dev/null || break; sleep 0.1; done
kill -0 $dpid 2>/dev/null && die "the daemon did not end on SIGTERM"
wait $dpid || die "the daemon exited with status $?"
[ -e $SOCK ] && die "the daemon left $SOCK"
if grep -E 'ERROR|WARN|panicked' $DLOG; then
	die "the daemon logged errors"
fi
info "libgpiod: daemon ended on SIGTERM, no warnings"
