#!/usr/bin/env python3
"""Host side of e2e/tests/vsock.sh (the guest side is vsock-guest.c).

  vsock-host.py g2h PATH BYTES SEED RESULT
      Guest to host.  Listen on the Unix socket PATH (the daemon's
      "<uds-path>_<port>"), accept one connection, read up to EOF (the guest
      shuts down its sending side), check that exactly BYTES bytes of the
      pattern for SEED arrived, reply "OK <bytes> <crc32>\\n" (or
      "BAD <bytes> <crc32>\\n") so the guest can check too, and close.

  vsock-host.py h2g UDS PORT BYTES SEED CHUNK RESULT
      Host to guest.  Connect to the daemon's Unix socket UDS, write
      "CONNECT <PORT>\\n" and expect "OK <host port>\\n"; while the guest is not
      listening yet the daemon closes the connection, so retry every 0.2 s
      (bounded by --timeout).  Then send BYTES bytes of the pattern with one
      sendall() per CHUNK bytes, shut down the sending side, and read the
      guest's reply "OK <bytes> <crc32>\\n" up to EOF.

  vsock-host.py verify CONSOLE RESULT...
      After the guest passed: every RESULT file must start with "PASS", and
      the crc32 each side printed must agree with the guest's console lines
      "E2E: vsock-check <dir> <bytes> <crc32>".

Each mode writes one line to RESULT: "PASS <dir> bytes=N crc32=X ..." or
"FAIL <dir> <reason>", and logs progress to stdout.  Every wait is bounded
by --timeout seconds (default 100).

The pattern: splitmix64 words from state SEED, stored little-endian (byte i
is byte i%8 of word i/8); the checksum is zlib's CRC-32, as 8 hex digits.
"""
import argparse
import array
import os
import socket
import sys
import time
import zlib

M64 = (1 << 64) - 1


def pattern(n, seed):
    """n bytes of the splitmix64 pattern for seed (as vsock-guest.c)."""
    words = (n + 7) // 8
    out = array.array("Q", bytes(8 * words))
    x = seed & M64
    for i in range(words):
        x = (x + 0x9E3779B97F4A7C15) & M64
        z = x
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        out[i] = z ^ (z >> 31)
    if sys.byteorder != "little":
        out.byteswap()
    return out.tobytes()[:n]


def crc(data):
    return "%08x" % zlib.crc32(data)


def log(msg):
    print(f"vsock-host: {msg}", flush=True)


class Failed(Exception):
    pass


def write_result(path, line):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(line + "\n")
    os.replace(tmp, path)
    log(f"result: {line}")


def recv_all(sock, limit, deadline, what):
    """Read up to EOF (at most limit+1 bytes); returns (data, recv calls)."""
    buf = bytearray()
    calls = 0
    while len(buf) <= limit:
        left = deadline - time.monotonic()
        if left <= 0:
            raise Failed(f"timed out {what} after {len(buf)} bytes")
        sock.settimeout(left)
        try:
            b = sock.recv(min(1 << 20, limit + 1 - len(buf)))
        except socket.timeout:
            raise Failed(f"timed out {what} after {len(buf)} bytes") from None
        if not b:
            break
        calls += 1
        buf += b
    return bytes(buf), calls


def compare(data, want):
    """Empty string if data == want, else what differs."""
    if data == want:
        return ""
    lim = min(len(data), len(want))
    first = next((i for i in range(lim) if data[i] != want[i]), None)
    parts = [f"got {len(data)} bytes, wanted {len(want)}"]
    if first is not None:
        parts.append(
            f"first difference at byte {first} (0x{data[first]:02x}, wanted 0x{want[first]:02x})"
        )
    return "; ".join(parts)


def g2h(a):
    deadline = time.monotonic() + a.timeout
    if os.path.exists(a.path):
        os.unlink(a.path)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(a.path)
    srv.listen(1)
    # Listen first (the harness boots the guest once this socket listens),
    # then make the pattern while the guest boots.
    want = pattern(a.bytes, a.seed)
    want_crc = crc(want)
    log(f"g2h: listening on {a.path}; expecting {a.bytes} bytes, seed {a.seed}, crc32 {want_crc}")
    srv.settimeout(max(1.0, deadline - time.monotonic()))
    try:
        conn, _ = srv.accept()
    except socket.timeout:
        raise Failed(f"no connection on {a.path} within {a.timeout}s") from None
    srv.close()
    t0 = time.monotonic()
    log("g2h: accepted a connection")
    data, calls = recv_all(conn, a.bytes, deadline, "reading the guest's data")
    secs = time.monotonic() - t0
    got_crc = crc(data)
    log(f"g2h: read {len(data)} bytes up to EOF in {calls} recv() calls in {secs:.3f}s, crc32 {got_crc}")
    diff = compare(data, want)
    # The result first: once the guest has the reply it may finish and power
    # off, and the harness then stops this helper.
    if diff:
        write_result(a.result, f"FAIL g2h data from the guest differ from the pattern: {diff}")
    else:
        write_result(a.result, f"PASS g2h bytes={len(data)} crc32={got_crc} "
                               f"recv_calls={calls} seconds={secs:.3f}")
    reply = f"{'BAD' if diff else 'OK'} {len(data)} {got_crc}\n"
    conn.settimeout(max(1.0, deadline - time.monotonic()))
    try:
        conn.sendall(reply.encode())
        conn.close()
    except OSError as e:
        raise Failed(f"sending the reply '{reply.strip()}' failed: {e}") from None
    log(f"g2h: replied '{reply.strip()}'")
    return None


def h2g_connect(a, deadline):
    """Connected socket after "OK <port>\\n", and the number of attempts."""
    attempts = 0
    last = "the daemon's socket never appeared"
    while True:
        if time.monotonic() >= deadline:
            raise Failed(f"no 'OK' for CONNECT {a.port} within {a.timeout}s "
                         f"after {attempts} attempts; last: {last}")
        if not os.path.exists(a.uds):
            time.sleep(0.1)
            continue
        attempts += 1
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(2)
        try:
            s.connect(a.uds)
            s.sendall(f"CONNECT {a.port}\n".encode())
            line = b""
            while not line.endswith(b"\n") and len(line) < 64:
                b = s.recv(1)   # byte by byte: nothing after the line is the handshake's
                if not b:
                    break
                line += b
        except OSError as e:
            line = b""
            last = f"{type(e).__name__}: {e}"
        else:
            last = f"reply {line!r}" if line else "closed without a reply (guest not listening yet?)"
        text = line.decode(errors="replace")
        if text.startswith("OK ") and text.endswith("\n") and text[3:-1].isdigit():
            return s, attempts, int(text[3:-1])
        s.close()
        if line:
            # A reply that is not "OK <n>\n" is a protocol error, not a race.
            raise Failed(f"CONNECT {a.port}: unexpected reply {line!r}")
        if attempts <= 3 or attempts % 25 == 0:
            log(f"h2g: attempt {attempts}: {last}; retrying")
        time.sleep(0.2)


def h2g(a):
    data = pattern(a.bytes, a.seed)
    data_crc = crc(data)
    deadline = time.monotonic() + a.timeout
    log(f"h2g: will send {a.bytes} bytes, seed {a.seed}, crc32 {data_crc}, in writes of {a.chunk}")
    s, attempts, hport = h2g_connect(a, deadline)
    log(f"h2g: CONNECT {a.port} answered 'OK {hport}' on attempt {attempts}")
    t0 = time.monotonic()
    writes = 0
    s.settimeout(max(1.0, deadline - time.monotonic()))
    mv = memoryview(data)
    try:
        for off in range(0, len(data), a.chunk):
            s.sendall(mv[off:off + a.chunk])
            writes += 1
        s.shutdown(socket.SHUT_WR)
    except socket.timeout:
        raise Failed(f"timed out sending (write {writes + 1} of {a.chunk} bytes)") from None
    except OSError as e:
        raise Failed(f"sending failed at write {writes + 1}: {e}") from None
    secs = time.monotonic() - t0
    log(f"h2g: sent {len(data)} bytes in {writes} sendall() calls in {secs:.3f}s; shut down writing")
    reply, _ = recv_all(s, 128, deadline, "waiting for the guest's reply")
    s.close()
    want = f"OK {a.bytes} {data_crc}\n".encode()
    log(f"h2g: guest replied {reply!r}")
    if reply != want:
        raise Failed(f"guest replied {reply!r}, wanted {want!r}")
    return (f"PASS h2g bytes={a.bytes} crc32={data_crc} attempts={attempts} "
            f"host_port={hport} seconds={secs:.3f}")


def verify(a):
    checks = {}
    with open(a.console, errors="replace") as f:
        for line in f:
            parts = line.strip().split()
            if parts[:2] == ["E2E:", "vsock-check"] and len(parts) == 5:
                checks[parts[2]] = (parts[3], parts[4])
    for path in a.results:
        try:
            with open(path) as f:
                line = f.readline().strip()
        except OSError as e:
            raise Failed(f"{path}: {e} (the host helper did not finish)") from None
        if not line.startswith("PASS "):
            raise Failed(f"{path}: {line}")
        fields = dict(kv.split("=", 1) for kv in line.split()[2:] if "=" in kv)
        d = line.split()[1]
        if d not in checks:
            raise Failed(f"no 'E2E: vsock-check {d} ...' line in {a.console}")
        guest = checks[d]
        host = (fields.get("bytes"), fields.get("crc32"))
        if guest != host:
            raise Failed(f"{d}: guest says {guest[0]} bytes crc32 {guest[1]}, "
                         f"host says {host[0]} bytes crc32 {host[1]}")
        log(f"ok: {line}; the guest agrees")
    return None


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--timeout", type=float, default=100.0)
    sub = p.add_subparsers(dest="mode", required=True)
    g = sub.add_parser("g2h")
    g.add_argument("path")
    g.add_argument("bytes", type=int)
    g.add_argument("seed", type=int)
    g.add_argument("result")
    h = sub.add_parser("h2g")
    h.add_argument("uds")
    h.add_argument("port", type=int)
    h.add_argument("bytes", type=int)
    h.add_argument("seed", type=int)
    h.add_argument("chunk", type=int)
    h.add_argument("result")
    v = sub.add_parser("verify")
    v.add_argument("console")
    v.add_argument("results", nargs="+")
    a = p.parse_args()
    try:
        if a.mode == "verify":
            verify(a)
            return 0
        line = g2h(a) if a.mode == "g2h" else h2g(a)
        if line:
            write_result(a.result, line)
        return 0
    except Failed as e:
        if a.mode == "verify":
            log(f"FAIL: {e}")
        else:
            write_result(a.result, f"FAIL {a.mode} {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
