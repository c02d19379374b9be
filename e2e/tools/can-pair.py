#!/usr/bin/env python3
"""Orchestrator of the can-pair test: a second guest on the same CAN bus.

Starts VM 1 from VM 0's arguments (its own daemon socket through @VM@) with
its console in console1.log, waits until both guests printed "up", tells
both "go", then waits for VM 1's result: each guest prints "token T" (what
it sent) and "got T" (what it received from the other); they must cross.

Exit status 0 when VM 1 passed and the tokens cross; 1 with the reason on
the last line otherwise.  VM 0's own result is read by e2e/run.
"""

import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e_host import E2EError, Harness, log  # noqa: E402


def value(h, key):
    rx = re.compile(rf"^E2E: {key} ([0-9A-F]{{16}})$")
    for line in h.console_lines():
        m = rx.match(line)
        if m:
            return m.group(1)
    raise E2EError(f"no '{key}' line on {h.console}")


def main():
    h0 = Harness()
    h1 = Harness()
    h1.console = h0.path("console1.log")
    console0 = f"path={h0.console},"
    argv = [a.replace(console0, f"path={h1.console},") for a in h0.qemu_argv(1)]
    if not any(h1.console in a for a in argv):
        raise E2EError(f"VM 0's arguments have no '{console0}' to give VM 1 a console of its own")
    with open(h0.path("qemu1.log"), "wb") as out:
        vm1 = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,  # pylint: disable=consider-using-with
                               stderr=subprocess.STDOUT)
    log(f"VM 1: started (console {h1.console})")
    try:
        def vm1_alive():
            return None if vm1.poll() is None else f"VM 1 exited ({vm1.returncode})"

        def both_alive():
            return h0.vm0_alive() or vm1_alive()

        h0.wait_event("up", h0.left(), alive=both_alive)
        h1.wait_event("up", h0.left(), alive=both_alive)
        c0 = h0.tell_guest(0, "go")
        c1 = h0.tell_guest(1, "go")
        line = h1.wait_console(r"^E2E-RESULT: ", "VM 1's result", h0.left(), alive=vm1_alive).string
        if not line.startswith("E2E-RESULT: PASS"):
            raise E2EError(f"VM 1: {line}")
        h0.wait_console(r"^E2E-RESULT: ", "VM 0's result", h0.left(), alive=h0.vm0_alive)
        sent = (value(h0, "token"), value(h1, "token"))
        got = (value(h0, "got"), value(h1, "got"))
        if got != (sent[1], sent[0]):
            raise E2EError(f"tokens do not cross: VM 0 sent {sent[0]} got {got[0]}, VM 1 sent {sent[1]} got {got[1]}")
        log(f"VM 0 sent {sent[0]}, VM 1 got it; VM 1 sent {sent[1]}, VM 0 got it")
        c0.close()
        c1.close()
        vm1.wait(10)
        return 0
    finally:
        Harness.stop_vm(vm1)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except E2EError as e:
        print(f"can-pair: {e}", flush=True)
        sys.exit(1)
