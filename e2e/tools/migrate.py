#!/usr/bin/env python3
"""Orchestrator for live-migration tests (a test's "# e2e-orchestrator:").

  migrate.py [--ready EVENT] [--notify MSG]
      Live-migrate the guest from VM 0 (started by e2e/run) to VM 1:
      1. wait for the guest's `event EVENT` (default "migrate");
      2. start VM 1 with VM 0's command line (@VM@ = 1) plus
         "-incoming unix:@DIR@/migrate.sock"; wait for its QMP and for the
         migration socket to listen;
      3. QMP "migrate" on VM 0; poll "query-migrate" until "completed"
         (fails on "failed"/"cancelled", or after a bound);
      4. VM 1 must be "running" and VM 0 "postmigrate";
      5. tell the guest (now on VM 1, through its /dev/ttyS1) the line MSG
         (default "migrated"), then "quit" VM 0;
      6. wait for VM 1 to end (the guest powers off) and check its status.

  migrate.py --refused-by TEXT [--ready EVENT] [--notify MSG]
      The guest has a device QEMU cannot migrate: QMP "migrate" on VM 0 must
      fail at once with "non-migratable device" and TEXT in the error, without
      ever connecting to the destination (this script listens there itself);
      VM 0 must still be "running" and every daemon alive.  Then the guest is
      told MSG (default "refused") on VM 0, which goes on to the end.

Prints progress with times, and last a line "E2E-TIMES: ..." that e2e/run
adds to the test's summary.  Exit status 0 on success; otherwise 1, with the
reason on the last line before it.
"""

import argparse
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e_host import E2EError, Harness, Qmp, QmpError, log, unix_listening, wait_until  # noqa: E402

# Bounds (seconds).  Each is far above what the step takes on the 2-core CI
# machine (see e2e/README.md); they only keep a hang from eating the run.
READY_TIMEOUT = 60
MIGRATE_TIMEOUT = 90
RESUME_TIMEOUT = 30


def fmt(seconds):
    return f"{seconds:.1f}s"


def migrate(h, args):
    t0 = time.monotonic()
    src = Qmp(h.qmp_path(0), alive=h.vm0_alive)
    log(f"VM 0: QMP connected (QEMU {src.version.get('major')}.{src.version.get('minor')}"
        f".{src.version.get('micro')}); waiting for the guest's event '{args.ready}'")
    h.wait_event(args.ready, min(READY_TIMEOUT, h.left()), alive=h.vm0_alive)
    t_ready = time.monotonic()
    log(f"guest is ready after {fmt(t_ready - t0)}")

    mig = h.path("migrate.sock")
    dst_proc = h.start_vm(1, ["-incoming", f"unix:{mig}"])
    try:
        def dst_alive():
            rc = dst_proc.poll()
            return None if rc is None else f"VM 1 exited with status {rc} (see qemu1.log)"

        dst = Qmp(h.qmp_path(1), alive=dst_alive)
        wait_until(f"VM 1's migration socket {mig} to listen", 30, lambda: unix_listening(mig),
                   alive=dst_alive)
        status = dst.cmd("query-status")["status"]
        if status != "inmigrate":
            raise E2EError(f"VM 1 is '{status}', not 'inmigrate', before the migration")
        t_dst = time.monotonic()
        log(f"VM 1: started and waiting for the migration stream ({fmt(t_dst - t_ready)})")

        if args.max_bandwidth:
            src.cmd("migrate-set-parameters", **{"max-bandwidth": args.max_bandwidth})
        src.cmd("migrate", uri=f"unix:{mig}")
        seen = []

        def progress():
            info = src.cmd("query-migrate")
            st = info.get("status", "none")
            if not seen or seen[-1] != st:
                seen.append(st)
                log(f"VM 0: migration status '{st}'")
            if st in ("failed", "cancelled"):
                raise E2EError(f"migration {st}: {info.get('error-desc', 'no error-desc')} "
                               f"(statuses {' -> '.join(seen)}; see qemu.log and qemu1.log)")
            return info if st == "completed" else None

        info = wait_until("the migration to complete (query-migrate 'completed')",
                          min(MIGRATE_TIMEOUT, h.left()), progress, interval=0.05,
                          alive=lambda: h.vm0_alive() or dst_alive())
        t_done = time.monotonic()
        ram = info.get("ram", {})
        log(f"migration completed in {fmt(t_done - t_dst)}: QEMU total-time {info.get('total-time')} ms, "
            f"downtime {info.get('downtime')} ms, setup {info.get('setup-time')} ms, "
            f"{ram.get('transferred', 0) // 1024} KiB transferred, {ram.get('duplicate', 0)} zero pages, "
            f"{ram.get('normal', 0)} normal pages, dirty-sync-count {ram.get('dirty-sync-count')}")

        wait_until("VM 1 to run the guest (query-status 'running')", RESUME_TIMEOUT,
                   lambda: dst.cmd("query-status")["status"] == "running", interval=0.05, alive=dst_alive)
        status = src.cmd("query-status")["status"]
        if status != "postmigrate":
            raise E2EError(f"VM 0 is '{status}' after the migration, not 'postmigrate'")
        log("VM 1 runs the guest; VM 0 is in 'postmigrate'")

        ctl = h.tell_guest(1, args.notify)
        src.cmd("quit")
        src.close()
        log("VM 0: quit; waiting for the guest on VM 1 to finish")
        wait_until("the guest on VM 1 to finish and power off", h.left(), lambda: dst_proc.poll() is not None,
                   interval=0.1)
        ctl.close()
        t_end = time.monotonic()
        if dst_proc.returncode != 0:
            raise E2EError(f"VM 1 exited with status {dst_proc.returncode} (see qemu1.log)")
        log(f"VM 1: the guest finished {fmt(t_end - t_done)} after the switch")
        print(f"E2E-TIMES: migration {fmt(t_done - t_dst)} (QEMU total {info.get('total-time')} ms, "
              f"downtime {info.get('downtime')} ms), guest on VM 1 {fmt(t_end - t_done)}", flush=True)
    finally:
        h.stop_vm(dst_proc)


def refused(h, args):
    t0 = time.monotonic()
    src = Qmp(h.qmp_path(0), alive=h.vm0_alive)
    log(f"VM 0: QMP connected; waiting for the guest's event '{args.ready}'")
    h.wait_event(args.ready, min(READY_TIMEOUT, h.left()), alive=h.vm0_alive)
    log(f"guest is ready after {fmt(time.monotonic() - t0)}")

    # A destination that only records whether QEMU ever connects.
    mig = h.path("migrate.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(mig)
    listener.listen(1)
    listener.setblocking(False)

    t_mig = time.monotonic()
    try:
        src.cmd("migrate", uri=f"unix:{mig}")
    except QmpError as e:
        err = e.desc
    else:
        raise E2EError(f"QEMU accepted 'migrate' although the guest has a device it cannot migrate "
                       f"({args.refused_by}); QEMU's status: {src.cmd('query-migrate')}")
    t_err = time.monotonic()
    log(f"VM 0: migrate refused in {(t_err - t_mig) * 1000:.0f} ms: {err}")
    if "non-migratable device" not in err or args.refused_by not in err:
        raise E2EError(f"migrate failed, but not for the non-migratable device '{args.refused_by}': {err}")
    try:
        conn, _ = listener.accept()
    except BlockingIOError:
        pass
    else:
        conn.close()
        raise E2EError("QEMU refused the migration but still connected to the destination socket")
    listener.close()
    os.unlink(mig)
    info = src.cmd("query-migrate")
    if info.get("status") in ("setup", "active", "device", "completed"):
        raise E2EError(f"after the refusal query-migrate says '{info.get('status')}'")
    status = src.cmd("query-status")["status"]
    if status != "running":
        raise E2EError(f"VM 0 is '{status}' after the refused migration, not 'running'")
    h.daemons_alive()
    log(f"VM 0 still running (query-migrate: {info or '{}'}); all {len(h.daemon_pids)} daemon(s) alive")
    ctl = h.tell_guest(0, args.notify)
    # Keep the control connection until the guest is done with it.
    wait_until("VM 0 to finish", h.left(), lambda: h.vm0_alive() is not None, interval=0.1)
    ctl.close()
    print(f"E2E-TIMES: migrate refused in {(t_err - t_mig) * 1000:.0f} ms", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ready", default="migrate", help="guest event to wait for before migrating")
    p.add_argument("--notify", help="line to send to the guest afterwards "
                   "(default: 'migrated', or 'refused' with --refused-by)")
    p.add_argument("--refused-by", metavar="TEXT",
                   help="expect QEMU to refuse: the error must name this non-migratable device")
    p.add_argument("--max-bandwidth", type=int, metavar="BYTES_PER_S",
                   help="migrate-set-parameters max-bandwidth before migrating (default: QEMU's)")
    args = p.parse_args()
    if args.notify is None:
        args.notify = "refused" if args.refused_by else "migrated"
    try:
        h = Harness()
        if args.refused_by:
            refused(h, args)
        else:
            migrate(h, args)
    except (E2EError, OSError, ValueError) as e:
        print(f"migrate.py: FAIL: {e}", flush=True)
        return 1
    log("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
