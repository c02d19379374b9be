#!/bin/sh
# Copyright 2026 vhost-device developers
# SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
#
# Run the pacing benchmark's `alsa` case against a host-paced ALSA PCM on a
# machine without a sound card: a private, headless PipeWire whose null sink
# is clocked by PipeWire's dummy driver (10 ms quantum), reached through
# PipeWire's ALSA plugin (Debian's pipewire-alsa).  Nothing system-wide is
# touched: the daemon, its socket and the ALSA configuration live in a
# temporary directory, and only the processes started here are stopped.
#
#   vhost-device-sound/benches/alsa-on-pipewire.sh [cargo bench arguments]
#
# Needs the `pipewire` daemon and pw-cli / pw-link (Debian: pipewire,
# pipewire-bin) and the plugin libasound_module_pcm_pipewire.so: installed
# (pipewire-alsa), or unpacked anywhere and named by PW_ALSA_PLUGIN, e.g.
#   apt-get download pipewire-alsa && dpkg -x pipewire-alsa_*.deb /tmp/pwa
#   PW_ALSA_PLUGIN=/tmp/pwa/usr/lib/x86_64-linux-gnu/alsa-lib/libasound_module_pcm_pipewire.so
# Without a session manager nothing links the daemon's stream to the sink,
# so this script does (once the stream exists, in the pause the benchmark
# makes between PREPARE and START, SND_BENCH_SETTLE_MS).
set -eu

plugin=${PW_ALSA_PLUGIN:-/usr/lib/x86_64-linux-gnu/alsa-lib/libasound_module_pcm_pipewire.so}
[ -f "$plugin" ] || { echo "no PipeWire ALSA plugin at $plugin (set PW_ALSA_PLUGIN)" >&2; exit 2; }
for t in pipewire pw-cli pw-link; do
	command -v $t >/dev/null || { echo "$t is not installed" >&2; exit 2; }
done

dir=$(mktemp -d)
pw_pid=
linker_pid=
cleanup() {
	# Not under `set -e`: a linker that has already finished must not keep
	# PipeWire running.
	set +e
	[ -n "$linker_pid" ] && kill "$linker_pid" 2>/dev/null
	[ -n "$pw_pid" ] && kill "$pw_pid" 2>/dev/null
	rm -rf "$dir"
}
trap cleanup EXIT INT TERM

cat >"$dir/pipewire.conf" <<'EOF'
context.properties = {
    core.daemon = true
    core.name = pipewire-0
    default.clock.rate = 48000
    default.clock.quantum = 480
    default.clock.min-quantum = 32
    default.clock.max-quantum = 2048
}
context.spa-libs = {
    audio.convert.* = audioconvert/libspa-audioconvert
    support.* = support/libspa-support
}
context.modules = [
    { name = libpipewire-module-protocol-native }
    { name = libpipewire-module-metadata }
    { name = libpipewire-module-spa-node-factory }
    { name = libpipewire-module-client-node }
    { name = libpipewire-module-access args = { } }
    { name = libpipewire-module-adapter }
    { name = libpipewire-module-link-factory }
]
context.objects = [
    { factory = metadata args = { metadata.name = default } }
    { factory = spa-node-factory
        args = {
            factory.name = support.node.driver
            node.name = Dummy-Driver
            node.group = pipewire.dummy
            priority.driver = 20000
        }
    }
    { factory = adapter
        args = {
            factory.name = support.null-audio-sink
            node.name = bench-sink
            media.class = Audio/Sink
            audio.position = [ FL FR ]
            node.group = pipewire.dummy
            monitor.channel-volumes = false
            adapter.auto-port-config = { mode = dsp monitor = false control = false position = preserve }
        }
    }
]
EOF
cat >"$dir/asound.conf" <<EOF
pcm_type.pipewire { lib "$plugin" }
pcm.pw { type pipewire server "pipewire-0" playback_node "-1" capture_node "-1" }
EOF

export XDG_RUNTIME_DIR="$dir" PIPEWIRE_RUNTIME_DIR="$dir"
pipewire -c "$dir/pipewire.conf" >"$dir/pipewire.log" 2>&1 &
pw_pid=$!
i=0
until [ -S "$dir/pipewire-0" ]; do
	i=$((i + 1))
	[ $i -gt 100 ] && { cat "$dir/pipewire.log" >&2; echo "PipeWire did not start" >&2; exit 1; }
	sleep 0.1
done

# Link the first playback stream to the sink: give it DSP ports (what a
# session manager does), then connect them.
link_stream() {
	i=0
	while [ $i -lt 1200 ]; do
		id=$(timeout 5 pw-cli ls Node 2>/dev/null | awk '
			/^[ \t]*id [0-9]+, type PipeWire:Interface:Node/ { id = $2; sub(",", "", id) }
			/media.class = "Stream\/Output\/Audio"/ { print id; exit }')
		if [ -n "$id" ]; then
			timeout 5 pw-cli set-param "$id" PortConfig '{ "direction": "Output", "mode": "dsp",
				"monitor": false, "control": false, "format": { "mediaType": "audio",
				"mediaSubtype": "raw", "format": "F32P", "rate": 48000, "channels": 2,
				"position": [ "FL", "FR" ] } }' >/dev/null
			for ch in FL FR; do
				j=0
				until timeout 5 pw-link "ALSA Playback:output_$ch" "bench-sink:playback_$ch" 2>/dev/null; do
					j=$((j + 1))
					[ $j -gt 50 ] && { echo "linker: cannot link $ch" >&2; return 1; }
					sleep 0.05
				done
			done
			echo "linker: stream $id linked to bench-sink" >&2
			return 0
		fi
		i=$((i + 1))
		sleep 0.1
	done
	echo "linker: no playback stream appeared" >&2
	return 1
}
link_stream &
linker_pid=$!

SND_BENCH_BACKENDS=${SND_BENCH_BACKENDS:-alsa} SND_BENCH_ALSA_PCM=pw \
	SND_BENCH_SETTLE_MS=${SND_BENCH_SETTLE_MS:-3000} ALSA_CONFIG_PATH="$dir/asound.conf" \
	cargo bench -p vhost-device-sound --bench pacing "$@"
