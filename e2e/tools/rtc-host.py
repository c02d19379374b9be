#!/usr/bin/env python3
"""Orchestrator of the rtc test: the host's clocks, read when the guest asks.

The guest reads one of its virtio RTC clocks (value A), then prints
"E2E-EVENT: time SEQ NAME"; this script reads the same host clock NAME at
once and sends "host SEQ NS end" to the guest's /dev/ttyS1; the guest then reads
its clock again (value B).  vhost-device-rtc answers every guest read with
this host's own clock, so A <= NS <= B must hold exactly: no tolerance is
needed, however slow the TCG guest is.

NAME is realtime, tai (CLOCK_TAI, plus 37 s while the kernel has no TAI
offset, as vhost-device-rtc does by default), monotonic or boottime.

Runs until the guest prints its result line or VM 0 ends.  Exit status 0;
1 with the reason on the last line.
"""

import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e_host import E2EError, Harness, log  # noqa: E402

TAI_FALLBACK_S = 37
NS = 1_000_000_000


def host_clock(name):
    if name == "realtime":
        return time.clock_gettime_ns(time.CLOCK_REALTIME)
    if name == "tai":
        rt = time.clock_gettime_ns(time.CLOCK_REALTIME)
        tai = time.clock_gettime_ns(time.CLOCK_TAI)
        kernel = (tai - rt + NS // 2) // NS
        return tai + (TAI_FALLBACK_S * NS if kernel == 0 else 0)
    if name == "monotonic":
        return time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    if name == "boottime":
        return time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    raise E2EError(f"the guest asked for an unknown clock '{name}'")


def main():
    h = Harness()
    ask = re.compile(r"^E2E-EVENT: time (\d+) (\w+)$")
    done = re.compile(r"^E2E-RESULT: ")
    conn = None
    seen = 0
    answered = 0
    while True:
        lines = h.console_lines()
        for line in lines[seen:]:
            m = ask.match(line)
            if m:
                ns = host_clock(m.group(2))
                # "end" marks a complete line: the guest's reader may see a
                # line before all of it arrived.
                msg = f"host {m.group(1)} {ns} end"
                if conn is None:
                    conn = h.tell_guest(0, msg)
                else:
                    conn.sendall(msg.encode() + b"\n")
                answered += 1
            elif done.match(line):
                log(f"the guest is done ({line}); answered {answered} time requests")
                return 0
        seen = len(lines)
        dead = h.vm0_alive()
        if dead:
            log(f"{dead}; answered {answered} time requests")
            return 0
        time.sleep(0.01)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except E2EError as e:
        print(f"rtc-host: {e}", flush=True)
        sys.exit(1)
