#!/usr/bin/env python3
"""Orchestrator of the can test: the host-side peer on the software bus.

Usage: can-host.py TOOL BUS, where TOOL is vhost-device-can-bus and BUS the
bus of the test's daemon.  A dump of the bus (a node, so it acknowledges
the guest's frames) runs for the whole test; then, on the guest's events:

  can-up         send 0A0#A0A1A2A3, 1BCDEF00#R3 and a 48-byte FD frame 0A2
  sent           wait until the dump printed the guest's three frames,
                 tell the guest "got-frames"
  busoff-ready   inject a bus-off into the bus
  restarted      wait until the dump printed 7FF#0102, tell "got-restart"

Exit status 0 once the guest printed its result (the guest decides); 1 with
the reason on the last line if a step failed.
"""

import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e_host import E2EError, Harness, log, wait_until  # noqa: E402

FD = "".join(f"{i:02X}" for i in range(1, 49))
GUEST_FRAMES = ["123#DEADBEEF", "12345678#R2", "321##0" + FD]


def main():
    tool, bus = sys.argv[1], sys.argv[2]
    h = Harness()
    dump_path = h.path("host-dump.out")
    with open(dump_path, "wb") as out:
        dump = subprocess.Popen([tool, "--bus", bus, "dump"], stdout=out,  # pylint: disable=consider-using-with
                                stderr=subprocess.STDOUT)
    try:
        return run(h, tool, bus, dump, dump_path)
    finally:
        dump.terminate()
        dump.wait(5)


def dumped():
    with open(DUMP[0], encoding="utf-8", errors="replace") as f:
        return [line.strip() for line in f]


DUMP = [""]


def tool_run(tool, bus, *args):
    r = subprocess.run([tool, "--bus", bus, *args], capture_output=True, text=True, timeout=30, check=False)
    if r.returncode != 0:
        raise E2EError(f"vhost-device-can-bus {' '.join(args)} failed: {r.stderr.strip()}")
    log(f"vhost-device-can-bus {' '.join(args)}: done")


def run(h, tool, bus, dump, dump_path):
    DUMP[0] = dump_path

    def alive():
        if dump.poll() is not None:
            return f"the host's dump exited ({dump.returncode}): {' | '.join(dumped())}"
        return h.vm0_alive()

    h.wait_event("can-up", h.left(), alive=alive)
    tool_run(tool, bus, "send", "0A0#A0A1A2A3", "1BCDEF00#R3", "0A2##1" + FD)

    h.wait_event("sent", h.left(), alive=alive)
    wait_until("the guest's frames in the host's dump", 20,
               lambda: all(f in dumped() for f in GUEST_FRAMES), alive=alive)
    log(f"the host's dump has the guest's frames: {', '.join(f[:20] for f in GUEST_FRAMES)}")
    conn = h.tell_guest(0, "got-frames")

    h.wait_event("busoff-ready", h.left(), alive=alive)
    tool_run(tool, bus, "inject", "busoff")

    h.wait_event("restarted", h.left(), alive=alive)
    wait_until("7FF#0102 in the host's dump", 20, lambda: "7FF#0102" in dumped(), alive=alive)
    conn.sendall(b"got-restart\n")
    log("the guest's frame after its restart reached the host")

    h.wait_console(r"^E2E-RESULT: ", "the guest's result", h.left(), alive=h.vm0_alive)
    time.sleep(0.1)
    conn.close()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except E2EError as e:
        print(f"can-host: {e}", flush=True)
        sys.exit(1)
