# Simulated hardware for the daemons' real host backends: the guest kernel
# must offer a CAN bus (vcan + AF_CAN raw sockets), a GPIO chip (gpio-sim),
# a sound card (snd-aloop) and an I2C/SMBus adapter (the i2c-stub module).
# Starts no daemon.  Later tests run a daemon's host backend on these.
# e2e-timeout: 90

# ---- CAN: a vcan interface, up, and a frame through a raw CAN socket --------
[ -d /proc/net/can ] || fail "/proc/net/can missing: no AF_CAN in the kernel"
ip link add dev vcan0 type vcan 2>/tmp/err ||
	fail "cannot create vcan0 ('ip link add dev vcan0 type vcan'): $(cat /tmp/err)"
ip link set dev vcan0 up 2>/tmp/err || fail "cannot bring vcan0 up: $(cat /tmp/err)"
# ARPHRD_CAN is 280; IFF_UP is bit 0 of the flags.
[ "$(cat /sys/class/net/vcan0/type)" = 280 ] ||
	fail "vcan0 has link type $(cat /sys/class/net/vcan0/type), not CAN (280)"
[ $(($(cat /sys/class/net/vcan0/flags) & 1)) -eq 1 ] ||
	fail "vcan0 is not up (flags $(cat /sys/class/net/vcan0/flags))"
info "can: vcan0 up (flags $(cat /sys/class/net/vcan0/flags), mtu $(cat /sys/class/net/vcan0/mtu));" \
	"/proc/net/can has:" /proc/net/can/*
for tool in candump cansend; do
	command -v $tool >/dev/null ||
		fail "$tool not in the initramfs (the host needs can-utils: run e2e/setup)"
done
# candump's raw socket receives the frame that cansend's raw socket sends
# (vcan loops every frame back to all the sockets bound to it).
candump -n 1 -T 5000 vcan0 >/tmp/candump.out 2>&1 &
dump_pid=$!
_i=0
# Wait until candump's socket is in vcan0's receive list (ident "raw").
until grep -q '^ *vcan0 .* raw$' /proc/net/can/rcvlist_all 2>/dev/null; do
	_i=$((_i + 1))
	[ "$_i" -gt 50 ] && fail "candump did not bind a raw CAN socket to vcan0: $(cat /tmp/candump.out)"
	sleep 0.1
done
cansend vcan0 123#DEADBEEF 2>/tmp/err || fail "cansend on vcan0 failed: $(cat /tmp/err)"
wait $dump_pid || fail "candump on vcan0 failed (status $?): $(cat /tmp/candump.out)"
grep -q '123.*DE AD BE EF' /tmp/candump.out ||
	fail "candump did not receive the frame sent with cansend: '$(cat /tmp/candump.out)'"
info "can: raw socket round trip on vcan0: $(tr -s ' ' </tmp/candump.out)"

# ---- GPIO: a gpio-sim chip made through configfs --------------------------
cfg=/sys/kernel/config/gpio-sim
[ -d $cfg ] || fail "$cfg missing (configfs not mounted or no CONFIG_GPIO_SIM)"
mkdir $cfg/e2e $cfg/e2e/bank0 || fail "cannot make a gpio-sim device in $cfg"
echo 8 >$cfg/e2e/bank0/num_lines || fail "cannot set num_lines of the gpio-sim bank"
echo 1 >$cfg/e2e/live || fail "cannot switch the gpio-sim device live"
chip=$(cat $cfg/e2e/bank0/chip_name)
case $chip in gpiochip[0-9]*) ;; *) fail "gpio-sim bank has chip_name '$chip', not gpiochipN" ;; esac
need_file "/dev/$chip"
[ -c "/dev/$chip" ] || fail "/dev/$chip is not a character device"
gdir=/sys/bus/gpio/devices/$chip
[ -d "$gdir" ] || fail "$gdir missing"
lines=0
for l in "$gdir"/sim_gpio*; do [ -d "$l" ] && lines=$((lines + 1)); done
[ "$lines" -eq 8 ] || fail "$gdir has $lines sim_gpio* lines, wanted 8"
# The simulator's side of a line: pull it up and the (unrequested) line reads 1.
echo pull-up >"$gdir/sim_gpio3/pull" || fail "cannot set the pull of $chip line 3"
[ "$(cat "$gdir/sim_gpio3/value")" = 1 ] || fail "$chip line 3 pulled up reads $(cat "$gdir/sim_gpio3/value")"
info "gpio: /dev/$chip ($(cat $cfg/e2e/dev_name)) with $lines lines in $gdir; line 3 pulled up reads 1"

# ---- sound: the snd-aloop Loopback card -----------------------------------
grep -q Loopback /proc/asound/cards 2>/dev/null ||
	fail "no Loopback card in /proc/asound/cards: '$(cat /proc/asound/cards 2>&1)'"
card=$(sed -n 's/^ *\([0-9][0-9]*\) \[Loopback *\].*/\1/p' /proc/asound/cards | head -n1)
[ -n "$card" ] || fail "cannot find the Loopback card number in /proc/asound/cards"
_i=0
while [ ! -c "/dev/snd/pcmC${card}D0p" ]; do
	_i=$((_i + 1))
	[ "$_i" -gt 50 ] && fail "/dev/snd/pcmC${card}D0p missing; /dev/snd has:" /dev/snd/*
	sleep 0.1
done
play=0 capt=0
for n in /dev/snd/pcmC"$card"D*; do
	case $n in *p) play=$((play + 1)) ;; *c) capt=$((capt + 1)) ;; esac
done
info "sound: card $card Loopback; $play playback and $capt capture PCM nodes in /dev/snd"

# ---- I2C: the i2c-stub module with a chip at 0x1c -------------------------
ko=$(find /lib/modules -name 'i2c-stub.ko*' 2>/dev/null | head -n1)
[ -n "$ko" ] || fail "i2c-stub.ko is not in the initramfs (kernel built without modules?)"
insmod "$ko" chip_addr=0x1c 2>/tmp/err || fail "insmod $ko chip_addr=0x1c failed: $(cat /tmp/err)"
grep -q '^i2c_stub ' /proc/modules || fail "i2c_stub not in /proc/modules after insmod"
bus=
for d in /sys/bus/i2c/devices/i2c-*; do
	[ -f "$d/name" ] || continue
	case $(cat "$d/name") in *"SMBus stub"*) bus=${d##*/i2c-} ;; esac
done
[ -n "$bus" ] || fail "no i2c adapter named 'SMBus stub' in /sys/bus/i2c/devices after insmod"
need_file "/dev/i2c-$bus"
[ -c "/dev/i2c-$bus" ] || fail "/dev/i2c-$bus is not a character device"
# A byte written to register 0x10 of the stub chip reads back through /dev/i2c-N.
i2cset -y "$bus" 0x1c 0x10 0x5a 2>/tmp/err || fail "i2cset on /dev/i2c-$bus 0x1c failed: $(cat /tmp/err)"
val=$(i2cget -y "$bus" 0x1c 0x10 2>/tmp/err) || fail "i2cget on /dev/i2c-$bus 0x1c failed: $(cat /tmp/err)"
[ "$val" = 0x5a ] || fail "i2c-stub chip 0x1c register 0x10 reads '$val', wrote 0x5a"
info "i2c: /dev/i2c-$bus is '$(cat "/sys/bus/i2c/devices/i2c-$bus/name")'; chip 0x1c reg 0x10 wrote and read 0x5a"
