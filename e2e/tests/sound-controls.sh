# vhost-device-sound with audio controls: `--controls` on the daemon and
# `controls=on` on QEMU's vhost-user-snd-pci (the pair must match: QEMU
# passes VIRTIO_SND_F_CTLS through but sizes the config space by its own
# flag).  The guest's virtio_snd must probe the four controls (CTL_INFO with
# its 96-byte stride; a bad answer fails the probe and leaves no card), and
# playback at the default volume (0 dB) must still reach stream0.wav sample
# for sample.
#
# e2e-prepare: python3 @E2E@/tools/snd-host.py make-capture capture.wav 12000
# e2e-daemon: vhost-device-sound --socket-path @DIR@/snd.sock --backend wav --wav-dir @DIR@ --wav-capture @DIR@/capture.wav --controls
# e2e-socket: @DIR@/snd.sock
# e2e-qemu: -chardev socket,id=snd0,path=@DIR@/snd.sock
# e2e-qemu: -device vhost-user-snd-pci,chardev=snd0,controls=on
# e2e-verify: python3 @E2E@/tools/snd-host.py verify .
# e2e-verify: ! grep -HE 'ERROR|WARN|panicked' daemon1-vhost-device-sound.log

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
true
