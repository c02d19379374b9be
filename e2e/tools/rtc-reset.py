#!/usr/bin/env python3
"""Orchestrator of the rtc-reboot test: reset the guest once, mid-test.

Every boot of the guest asks "E2E-EVENT: hello"; this script answers
"boot N end" on its /dev/ttyS1 (N counts the hellos).  On "E2E-EVENT:
reset" (the first boot's request, once it set an RTC alarm and the device
holds its alarmq buffers) it resets the machine with QMP "system_reset",
which QEMU passes to vhost-user-rtc only as stopped and restarted rings
(QMP "set-action" lets this one reset through e2e/run's -no-reboot).
Runs until the guest's result line after the reset, or VM 0 ends.  Exit
status 0; 1 with the reason on the last line.
"""

import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e_host import E2EError, Harness, Qmp, log  # noqa: E402


def main():
    h = Harness()
    qmp = Qmp(h.qmp_path(0), alive=h.vm0_alive)
    hello = re.compile(r"^E2E-EVENT: hello$")
    reset = re.compile(r"^E2E-EVENT: reset$")
    done = re.compile(r"^E2E-RESULT: ")
    conn = None
    boots = 0
    was_reset = False
    seen = 0
    end = time.monotonic() + h.left()
    while time.monotonic() < end:
        lines = h.console_lines()
        for line in lines[seen:]:
            if hello.match(line):
                boots += 1
                if was_reset:
                    # The firmware may reset once more on the way: only now
                    # is the next boot under way.
                    qmp.cmd("set-action", reboot="shutdown")
                msg = f"boot {boots} end"
                if conn is not None:
                    conn.close()
                # A new boot opened ttyS1 afresh: a new connection for it.
                conn = h.tell_guest(0, msg)
            elif reset.match(line):
                if was_reset:
                    raise E2EError("the guest asked for a second reset")
                # e2e/run's -no-reboot turns a reset into an exit: allow
                # resets until the next boot says hello, then restore it.
                qmp.cmd("set-action", reboot="reset")
                log("system_reset")
                qmp.cmd("system_reset")
                was_reset = True
            elif done.match(line):
                if was_reset:
                    log(f"the guest is done after {boots} boots ({line})")
                    print(f"E2E-TIMES: {boots} boots", flush=True)
                    return 0
                raise E2EError(f"the guest ended before it was reset: {line}")
        seen = len(lines)
        dead = h.vm0_alive()
        if dead:
            raise E2EError(f"{dead} after {boots} boots")
        time.sleep(0.02)
    raise E2EError(f"timed out after {boots} boots")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except E2EError as e:
        print(f"rtc-reset: {e}", flush=True)
        sys.exit(1)
