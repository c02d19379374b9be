# vhost-device-sound with audio controls: `--controls` on the daemon and
# `controls=on` on QEMU's vhost-user-snd-pci (the pair must match: QEMU
# passes VIRTIO_SND_F_CTLS through but sizes the config space by its own
# flag).  The guest's virtio_snd must probe the four controls (CTL_INFO with
# its 96-byte stride; a bad answer fails the probe and leaves no card), and
# playback at the default volume (0 dB) must still reach stream0.wav sample
# for sample.  Then controls go both ways (snd-guest's ALSA control ioctls,
# tools/snd-ctl-host.py on the daemon's control socket snd.sock.ctl): a
# value the guest writes reaches the host, and a change the host makes is
# notified to the guest (VIRTIO_SND_EVT_CTL_NOTIFY, seen as an ALSA control
# event) and reads back there.
#
# e2e-prepare: python3 @E2E@/tools/snd-host.py make-capture capture.wav 12000
# e2e-daemon: vhost-device-sound --socket-path @DIR@/snd.sock --backend wav --wav-dir @DIR@ --wav-capture @DIR@/capture.wav --controls
# e2e-socket: @DIR@/snd.sock
# e2e-qemu: -chardev socket,id=snd0,path=@DIR@/snd.sock
# e2e-qemu: -device vhost-user-snd-pci,chardev=snd0,controls=on
# e2e-orchestrator: exec python3 @E2E@/tools/snd-ctl-host.py
# e2e-verify: python3 @E2E@/tools/snd-host.py verify .
# e2e-verify: ! grep -HE 'ERROR|WARN|panicked' daemon1-vhost-device-sound.log
# e2e-timeout: 120

host_listen
need_file /proc/asound/cards
card=$(sed -n 's/^ *\([0-9][0-9]*\) \[.*\]: virtio-snd.*/\1/p' /proc/asound/cards | head -n1)
[ -n "$card" ] || fail "no virtio-snd card (probe with controls failed?): '$(cat /proc/asound/cards)'; $(dmesg | grep -i snd | tail -n 3)"
need_file /dev/snd/controlC${card}
need_file /dev/snd/pcmC${card}D0p
info "card $card probed with controls"
out=$(timeout 30 snd-guest play /dev/snd/pcmC${card}D0p 48000 2>&1) ||
	fail "snd-guest play failed: $out"
info "$out"
out=$(timeout 30 snd-guest record /dev/snd/pcmC${card}D0c 48000 2>&1) ||
	fail "snd-guest record failed: $out"
info "$out"

ctl=/dev/snd/controlC${card}
# Guest -> host.
out=$(snd-guest ctl-set $ctl "Playback Volume" 0 61 2>&1) || fail "snd-guest ctl-set: $out"
info "guest wrote: $out"
event guest-set
wait_host guest-seen 60

# Host -> guest: listen for control events, then let the host change one.
snd-guest ctl-wait $ctl "Capture Volume" 0 23 60000 >/tmp/ctl-wait.log 2>&1 &
waitpid=$!
for _t in $(seq 100); do grep -q subscribed /tmp/ctl-wait.log && break; sleep 0.1; done
grep -q subscribed /tmp/ctl-wait.log || fail "snd-guest ctl-wait: $(cat /tmp/ctl-wait.log)"
event host-set-please
wait $waitpid || fail "the host's change was not notified: $(cat /tmp/ctl-wait.log)"
info "host change notified: $(tail -n1 /tmp/ctl-wait.log)"
out=$(snd-guest ctl-get $ctl "Capture Volume" 0 2>&1) || fail "snd-guest ctl-get: $out"
[ "$out" = "Capture Volume 0 = 23" ] || fail "after the host's change: $out"
event controls-done
true
