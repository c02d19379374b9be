# vhost-device-sound: the guest's virtio_snd driver probes a card with a
# playback and a capture PCM; the guest plays a sine, which the daemon's wav
# backend must write to stream0.wav sample for sample, and records the
# daemon's capture WAV, which it must receive sample for sample (both
# checked by CRC-32 on the host, tools/snd-host.py). Playback and capture go
# through the kernel's ALSA PCM ioctls (tools/snd-guest.c).
#
# e2e-prepare: python3 @E2E@/tools/snd-host.py make-capture capture.wav 12000
# e2e-daemon: vhost-device-sound --socket-path @DIR@/snd.sock --backend wav --wav-dir @DIR@ --wav-capture @DIR@/capture.wav
# e2e-socket: @DIR@/snd.sock
# e2e-qemu: -chardev socket,id=snd0,path=@DIR@/snd.sock
# e2e-qemu: -device vhost-user-snd-pci,chardev=snd0
# e2e-verify: python3 @E2E@/tools/snd-host.py verify .
# e2e-verify: ! grep -HE 'ERROR|WARN|panicked' daemon1-vhost-device-sound.log

command -v snd-guest >/dev/null || fail "snd-guest is not in the initramfs"
need_file /proc/asound/cards
card=$(sed -n 's/^ *\([0-9][0-9]*\) \[.*\]: virtio-snd.*/\1/p' /proc/asound/cards | head -n1)
[ -n "$card" ] || fail "no virtio-snd card in /proc/asound/cards: '$(cat /proc/asound/cards)'"
pcm=$(grep "^$(printf %02d "$card")-00:" /proc/asound/pcm)
info "card $card; $pcm"
case $pcm in
	*"playback 1"*"capture 1"*) ;;
	*) fail "card $card has no playback and capture PCM: '$pcm'" ;;
esac
need_file /dev/snd/pcmC${card}D0p
need_file /dev/snd/pcmC${card}D0c

# 1 s of a sine, 48 kHz S16 stereo.
out=$(timeout 30 snd-guest play /dev/snd/pcmC${card}D0p 48000 2>&1) ||
	fail "snd-guest play failed: $out"
info "$out"

# 1 s from the host's 0.25 s capture file, so it loops four times.
out=$(timeout 30 snd-guest record /dev/snd/pcmC${card}D0c 48000 2>&1) ||
	fail "snd-guest record failed: $out"
info "$out"
dmesg | grep -i 'virtio.*snd\|snd.*virtio' | grep -iE 'error|fail|invalid' &&
	fail "virtio_snd complained in dmesg"
true
