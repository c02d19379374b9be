#!/usr/bin/env python3
"""Host side of the e2e `sound-controls` test: the host's mixer.

vhost-device-sound runs with --controls, so it listens on snd.sock.ctl for
one-line commands (vhost-device-sound/src/device/mixer.rs). The guest
(tests/sound-controls.sh) announces each step with `event NAME`; this
script checks that a value the guest wrote reached the host, makes a change
on the host that the guest must be notified of (VIRTIO_SND_EVT_CTL_NOTIFY),
and answers on the guest's ttyS1. Every wait is bounded.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e_host import ControlSocket, E2EError, Harness, log  # noqa: E402

# Control ids of the default topology: stream 0 (playback) has 0 (volume)
# and 1 (switch), stream 1 (capture) 2 and 3.
PLAYBACK_VOLUME = 0
CAPTURE_VOLUME = 2


class Mixer(ControlSocket):
    """The daemon's control socket: one command a line, one answer a line."""

    def __init__(self, path):
        super().__init__(path, "mixer", timeout=60)


def main():
    h = Harness()

    alive = h.vm0_alive
    mixer = Mixer(h.path("snd.sock.ctl"))

    # Guest -> host: the guest set Playback Volume to 61.
    h.wait_event("guest-set", h.left(), alive=alive)
    mixer.cmd(f"wait {PLAYBACK_VOLUME} 61 30000")
    h.tell(0, "guest-seen")

    # Host -> guest: once the guest listens for control events, the host
    # sets Capture Volume to 23; the guest must be told.
    h.wait_event("host-set-please", h.left(), alive=alive)
    answer = mixer.cmd(f"set {CAPTURE_VOLUME} 23")
    if answer != "ok changed":
        raise E2EError(f"setting Capture Volume changed nothing: {answer}")
    h.tell(0, "host-set")
    h.wait_event("controls-done", h.left(), alive=alive)
    log("all steps done")


if __name__ == "__main__":
    try:
        main()
    except E2EError as e:
        log(f"FAIL: {e}")
        print(f"snd-ctl-host: {e}", flush=True)
        sys.exit(1)
