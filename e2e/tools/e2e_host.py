"""Host-side building blocks for e2e orchestrators (Python 3 standard library).

An orchestrator is the command of a test's "# e2e-orchestrator:" header.
e2e/run starts it right after its own QEMU (VM 0), in the test's directory,
with this environment (see e2e/README.md, "Orchestrators"):

  E2E_TEST          test name
  E2E_TEST_DIR      the test's private directory (@DIR@)
  E2E_QEMU          the QEMU binary
  E2E_QEMU_ARGS     file with VM 0's QEMU arguments, one a line, "@VM@" still
                    in place of the VM number (qmp@VM@.sock, ctl@VM@.sock, and
                    whatever the test's "# e2e-qemu:" lines use)
  E2E_QEMU_PID      VM 0's process
  E2E_CONSOLE       the guest console (every VM appends to the same file)
  E2E_TIMEOUT       the test's timeout in seconds
  E2E_DAEMON_PIDS   the daemons' processes, in header order, space-separated

Every wait here is bounded and its error names what did not happen.
"""

import json
import os
import re
import signal
import socket
import subprocess
import time


class E2EError(Exception):
    """A step of the orchestration failed; the message says which and why."""


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def unix_listening(path):
    """True once a Unix socket bound to `path` has called listen()."""
    # /proc/net/unix: Num RefCount Protocol Flags Type St Inode Path; Flags
    # has __SO_ACCEPTCON (0x10000) on a listening socket.
    try:
        with open("/proc/net/unix", encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 8 and fields[7] == path and fields[3] == "00010000":
                    return True
    except OSError:
        pass
    return False


def wait_until(what, timeout, check, interval=0.05, alive=None):
    """Poll `check()` until it returns something true and return that.

    Fails after `timeout` seconds, or as soon as `alive()` returns a reason
    (a process that must keep running has exited).
    """
    end = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if alive is not None:
            dead = alive()
            if dead:
                raise E2EError(f"{dead} while waiting for {what}")
        if time.monotonic() >= end:
            raise E2EError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent, the harness) is dead.
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (OSError, IndexError):
        return False


class ControlSocket:
    """A daemon's host control socket (vhost_device_common::control): one
    command a line, one answer a line; an answer other than `ok ...` raises."""

    def __init__(self, path, name, timeout=60):
        self.name = name
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b""

    def cmd(self, text):
        self.sock.sendall(text.encode() + b"\n")
        while b"\n" not in self.buf:
            data = self.sock.recv(4096)
            if not data:
                raise E2EError(f"the daemon closed the control socket after: {text}")
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        answer = line.decode()
        log(f"{self.name}: {text} -> {answer}")
        if not answer.startswith("ok"):
            raise E2EError(f"{self.name} command '{text}' failed: {answer}")
        return answer


class QmpError(E2EError):
    """QEMU answered a command with an error."""

    def __init__(self, command, error):
        self.command = command
        self.cls = error.get("class", "")
        self.desc = error.get("desc", "")
        super().__init__(f"QMP {command} failed: {self.cls}: {self.desc}")


class Qmp:
    """A QMP connection: greeting, qmp_capabilities, then commands."""

    def __init__(self, path, timeout=30.0, alive=None):
        self.path = path
        self.events = []
        self._buf = b""
        self._id = 0
        wait_until(f"QMP socket {path} to listen", timeout, lambda: unix_listening(path), alive=alive)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        greeting = self._read(timeout)
        if "QMP" not in greeting:
            raise E2EError(f"{path}: not a QMP greeting: {greeting}")
        self.version = greeting["QMP"].get("version", {}).get("qemu", {})
        self.cmd("qmp_capabilities")

    def _read(self, timeout):
        end = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = end - time.monotonic()
            if left <= 0:
                raise E2EError(f"{self.path}: no QMP message within {timeout:g} s")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not data:
                raise E2EError(f"{self.path}: QEMU closed the QMP connection (did it exit? see its qemu*.log)")
            self._buf += data
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def cmd(self, name, timeout=30.0, **arguments):
        """Run `name`; return its "return" value or raise QmpError."""
        self._id += 1
        msg = {"execute": name, "id": self._id}
        if arguments:
            msg["arguments"] = arguments
        self.sock.sendall(json.dumps(msg).encode() + b"\r\n")
        end = time.monotonic() + timeout
        while True:
            reply = self._read(max(0.0, end - time.monotonic()))
            if "event" in reply:
                self.events.append(reply)
                continue
            if reply.get("id") != self._id:
                continue
            if "error" in reply:
                raise QmpError(name, reply["error"])
            return reply.get("return")

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class Harness:
    """What e2e/run passed to the orchestrator."""

    def __init__(self):
        env = os.environ
        try:
            self.test = env["E2E_TEST"]
            self.dir = env["E2E_TEST_DIR"]
            self.qemu = env["E2E_QEMU"]
            self.args_file = env["E2E_QEMU_ARGS"]
            self.vm0_pid = int(env["E2E_QEMU_PID"])
            self.console = env["E2E_CONSOLE"]
            self.timeout = float(env["E2E_TIMEOUT"])
            self.daemon_pids = [int(p) for p in env.get("E2E_DAEMON_PIDS", "").split()]
        except (KeyError, ValueError) as e:
            raise E2EError(f"environment from e2e/run missing or malformed ({e}): run this from a test's "
                           "'# e2e-orchestrator:' header, not by hand") from e
        self.start = time.monotonic()
        self._console_pos = 0
        self._console_lines = []

    # -- paths ------------------------------------------------------------
    def path(self, name):
        return os.path.join(self.dir, name)

    def qmp_path(self, vm):
        return self.path(f"qmp{vm}.sock")

    def ctl_path(self, vm):
        return self.path(f"ctl{vm}.sock")

    def left(self, margin=5.0):
        """Seconds left of the test's timeout, minus a margin for cleanup."""
        return max(1.0, self.timeout - (time.monotonic() - self.start) - margin)

    # -- VMs --------------------------------------------------------------
    def vm0_alive(self):
        return None if pid_alive(self.vm0_pid) else f"VM 0 (QEMU pid {self.vm0_pid}) exited"

    def qemu_argv(self, vm, extra=()):
        """VM `vm`'s command line: VM 0's, with @VM@ set to `vm`, plus `extra`."""
        with open(self.args_file, encoding="utf-8") as f:
            args = [a for a in f.read().split("\n") if a != ""]
        return [self.qemu] + [a.replace("@VM@", str(vm)) for a in args] + list(extra)

    def start_vm(self, vm, extra=()):
        """Start VM `vm` (not 0: e2e/run runs that one); output in qemu<vm>.log.

        The process stays in the orchestrator's process group, so e2e/run
        stops it with the orchestrator.
        """
        argv = self.qemu_argv(vm, extra)
        with open(self.path(f"qemu{vm}.args"), "w", encoding="utf-8") as f:
            f.write("\n".join(argv) + "\n")
        out = open(self.path(f"qemu{vm}.log"), "wb")  # pylint: disable=consider-using-with
        log(f"VM {vm}: starting {argv[0]} ... {' '.join(extra)} (arguments in qemu{vm}.args)")
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)

    @staticmethod
    def stop_vm(proc, timeout=5.0):
        """Stop a VM this orchestrator started (TERM, then KILL) and reap it."""
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)

    # -- the guest --------------------------------------------------------
    def console_lines(self):
        """The console's complete lines so far (\\r removed)."""
        try:
            with open(self.console, "rb") as f:
                f.seek(self._console_pos)
                data = f.read()
        except OSError:
            data = b""
        end = data.rfind(b"\n")
        if end >= 0:
            self._console_pos += end + 1
            for line in data[: end + 1].decode("utf-8", "replace").split("\n")[:-1]:
                self._console_lines.append(line.replace("\r", ""))
        return self._console_lines

    def wait_console(self, pattern, what, timeout, alive=None):
        """Wait for a console line matching the regular expression `pattern`."""
        rx = re.compile(pattern)
        seen = [0]

        def check():
            lines = self.console_lines()
            for i in range(seen[0], len(lines)):
                m = rx.search(lines[i])
                if m:
                    return m
            seen[0] = len(lines)
            return None

        return wait_until(what, timeout, check, interval=0.05, alive=alive)

    def wait_event(self, name, timeout, alive=None):
        """Wait for the guest's `event NAME` (console line "E2E-EVENT: NAME")."""
        fail = re.compile(r"^E2E-RESULT: FAIL ")

        def guest_alive():
            for line in self.console_lines():
                if fail.search(line):
                    return f"the guest failed ({line})"
            return alive() if alive else None

        return self.wait_console(rf"^E2E-EVENT: {re.escape(name)}$", f"the guest's event '{name}'",
                                 timeout, alive=guest_alive)

    def tell_guest(self, vm, line, timeout=10.0):
        """Send `line` to the guest's /dev/ttyS1 on VM `vm` (see lib.sh's wait_host).

        Returns the connection: keep it open until the guest has read the line.
        """
        path = self.ctl_path(vm)
        wait_until(f"control socket {path} to listen", timeout, lambda: unix_listening(path))
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(line.encode() + b"\n")
        log(f"VM {vm}: told the guest '{line}'")
        return s

    def tell(self, vm, line):
        """Send `line` to the guest of VM `vm` over one connection kept for
        the whole run (QEMU serves one client on ttyS1's socket)."""
        conns = self.__dict__.setdefault("_told", {})
        if vm in conns:
            conns[vm].sendall(line.encode() + b"\n")
            log(f"VM {vm}: told the guest '{line}'")
        else:
            conns[vm] = self.tell_guest(vm, line)

    def daemons_alive(self):
        """Fail unless every daemon e2e/run started is still running."""
        for i, pid in enumerate(self.daemon_pids, 1):
            if not pid_alive(pid):
                raise E2EError(f"daemon {i} (pid {pid}) is no longer running: see its daemon{i}-*.log")
