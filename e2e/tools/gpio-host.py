#!/usr/bin/env python3
"""Host side of the gpio e2e test: the outside world of the simulated chip.

vhost-device-gpio serves `--device-list sim:8:...` with its control socket
at gpio.sock.sim (see vhost-device-gpio/src/host/mock.rs). The guest (tests/gpio.sh)
announces each step with `event NAME`; this script checks what the guest did
to the chip, drives the chip's inputs, and answers on the guest's ttyS1.
Every wait is bounded.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e_host import ControlSocket, E2EError, Harness, log  # noqa: E402


class Chip(ControlSocket):
    """The simulated chip's control socket: one command a line, one answer a line."""

    def __init__(self, path):
        super().__init__(path, "chip", timeout=30)

    def field(self, line, key):
        for f in self.cmd(f"get {line}").split():
            if f.startswith(key + "="):
                return f.split("=", 1)[1]
        raise E2EError(f"no {key} in get {line}")


def main():
    h = Harness()

    alive = h.vm0_alive
    chip = Chip(h.path("gpio.sock.sim"))
    # Line 3 starts high, so that its falling edge can come later.
    chip.cmd("set 3 1")

    # Output: the guest drives line 0 high.
    h.wait_event("out-set", h.left(), alive=alive)
    chip.cmd("wait 0 dir=out 10000")
    if chip.field(0, "value") != "1":
        raise E2EError("the guest's output on line 0 is not high on the chip")
    h.tell(0, "out-seen")
    h.wait_event("out-released", h.left(), alive=alive)
    chip.cmd("wait 0 dir=none 10000")

    # Input: the host drives line 1, the guest reads it.
    for level in ("1", "0"):
        h.wait_event(f"in-{level}-please", h.left(), alive=alive)
        chip.cmd(f"set 1 {level}")
        h.tell(0, f"in-{level}-set")

    # Edge interrupts: wait until the guest's edge detection reached the
    # chip, then make the edge.
    steps = [
        ("edge-rising-armed", "wait 2 edge=rising 10000", "set 2 1", None),
        ("edge-falling-armed", "wait 3 edge=falling 10000", "set 3 0", None),
        ("edge-both-armed", "wait 4 edge=both 10000", "set 4 1", "edge-both-rose"),
    ]
    for event, ready, drive, then in steps:
        h.wait_event(event, h.left(), alive=alive)
        chip.cmd(ready)
        chip.cmd(drive)
        if then:
            h.wait_event(then, h.left(), alive=alive)
            chip.cmd("set 4 0")
    h.wait_event("edges-done", h.left(), alive=alive)
    # Every interrupt was disabled again when the guest closed its requests.
    for line in (2, 3, 4):
        chip.cmd(f"wait {line} edge=none 10000")
    log("all steps done")


if __name__ == "__main__":
    try:
        main()
    except E2EError as e:
        log(f"FAIL: {e}")
        print(f"gpio-host: {e}", flush=True)
        sys.exit(1)
