# vhost-device-sound's ALSA backend against real kernel ALSA, tested INSIDE
# the guest: the build host has no sound card, the guest kernel has the
# snd-aloop Loopback card, where what is played on device 0 is captured on
# device 1.  The daemon (--backend alsa) plays its stream 0 into
# hw:Loopback,0,0 and records its stream 1 from hw:Loopback,1,0; a vhost-user
# front end playing the daemon's guest (vhost-device-test-frontend
# sound-loop) plays 1 s of a known signal on stream 0 while recording
# stream 1, and must find every played sample, in order, in the recording.
# No vhost-user device is attached to QEMU.
#
# The guest has no alsa-lib configuration files, so the test writes a small
# one naming the two Loopback PCMs and points ALSA_CONFIG_PATH at it.
#
# e2e-guest-binary: vhost-device-sound vhost-device-test-frontend
# e2e-require: @BIN@/vhost-device-sound --help | grep -q -- --alsa-playback
# e2e-require: @BIN@/vhost-device-test-frontend --help | grep -q sound-loop
# e2e-timeout: 120

SOCK=/tmp/snd.sock
DLOG=/tmp/daemon.log

die() {
	echo "E2E: ---- daemon log ($DLOG) ----"
	tail -n 40 $DLOG 2>/dev/null | sed 's/^/E2E:   daemon: /'
	fail "$*"
}

grep -q Loopback /proc/asound/cards || fail "no Loopback card: '$(cat /proc/asound/cards)'"
card=$(sed -n 's/^ *\([0-9][0-9]*\) \[Loopback *\].*/\1/p' /proc/asound/cards | head -n1)
need_file /dev/snd/pcmC${card}D0p
need_file /dev/snd/pcmC${card}D1c
cat >/tmp/asound.conf <<CONF
pcm.loop_play { type hw; card $card; device 0; subdevice 0 }
pcm.loop_rec { type hw; card $card; device 1; subdevice 0 }
CONF
export ALSA_CONFIG_PATH=/tmp/asound.conf

vhost-device-sound --socket-path $SOCK --backend alsa \
	--alsa-playback loop_play --alsa-capture loop_rec -v >$DLOG 2>&1 &
dpid=$!
_i=0
while [ ! -S $SOCK ]; do
	_i=$((_i + 1))
	[ "$_i" -gt 100 ] && die "the daemon did not create $SOCK"
	kill -0 $dpid 2>/dev/null || die "the daemon exited"
	sleep 0.1
done
info "daemon listening (card $card)"

# 1 s in 40 ms periods: the daemon's buffers follow the guest's period
# (ALSA's 8 periods, its ring 2), so a TCG guest on a busy host, which is
# not scheduled for 100 ms at times, does not underrun as it does with
# 10 ms periods.
out=$(timeout 60 vhost-device-test-frontend --socket-path $SOCK sound-loop \
	--playback 0 --capture 1 --period-ms 40 --periods 25 --extra 15 --timeout 50 2>&1) ||
	die "sound-loop failed: $out"
info "$out"
case $out in
	"LOOPED 192000 AT "*) ;;
	*) die "unexpected: $out" ;;
esac
kill -0 $dpid 2>/dev/null || die "the daemon died"
grep -E 'ERROR|panicked' $DLOG && die "the daemon logged an error"
kill $dpid
true
