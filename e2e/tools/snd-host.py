#!/usr/bin/env python3
"""Host side of the e2e `sound` tests (standard library only).

  snd-host.py make-capture PATH FRAMES
      write a 48 kHz S16 stereo WAV of FRAMES frames (1 kHz left, 1.5 kHz
      right) for the daemon's --wav-capture
  snd-host.py verify DIR
      read the guest's "played ... crc32" and "recorded ... crc32" lines from
      DIR/console.log and check them against the host's files: the playback
      file DIR/stream0.wav must hold exactly the samples the guest played,
      and the guest must have recorded DIR/capture.wav, looped
"""
import math
import re
import struct
import sys
import zlib


def wav_data(path):
    with open(path, "rb") as f:
        b = f.read()
    if b[:4] != b"RIFF" or b[8:12] != b"WAVE":
        sys.exit(f"{path} is not a WAV file")
    at = 12
    fmt = None
    while at + 8 <= len(b):
        cid, size = b[at:at + 4], struct.unpack_from("<I", b, at + 4)[0]
        body = b[at + 8:at + 8 + size]
        if cid == b"fmt ":
            fmt = struct.unpack_from("<HHIIHH", body)
        if cid == b"data":
            return fmt, body
        at += 8 + size + (size & 1)
    sys.exit(f"{path} has no data chunk")


def make_capture(path, frames):
    data = bytearray()
    for i in range(frames):
        t = i / 48000.0
        left = round(math.sin(2 * math.pi * 1000 * t) * 10000)
        right = round(math.sin(2 * math.pi * 1500 * t) * 6000)
        data += struct.pack("<hh", left, right)
    hdr = b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE"
    hdr += b"fmt " + struct.pack("<IHHIIHH", 16, 1, 2, 48000, 192000, 4, 16)
    hdr += b"data" + struct.pack("<I", len(data))
    with open(path, "wb") as f:
        f.write(hdr + data)


def guest_line(console, what):
    m = re.findall(rf"E2E: {what} (\d+) bytes crc32 ([0-9a-f]{{8}})", console)
    if not m:
        sys.exit(f"the guest printed no '{what} ... crc32' line")
    n, crc = m[-1]
    return int(n), int(crc, 16)


def verify(d):
    with open(f"{d}/console.log", errors="replace") as f:
        console = f.read()
    n, crc = guest_line(console, "played")
    fmt, data = wav_data(f"{d}/stream0.wav")
    if fmt[:4] != (1, 2, 48000, 192000):
        sys.exit(f"stream0.wav has format {fmt}, not 48 kHz S16 stereo")
    if len(data) != n:
        sys.exit(f"stream0.wav holds {len(data)} bytes, the guest played {n}")
    got = zlib.crc32(data)
    if got != crc:
        sys.exit(f"stream0.wav crc32 {got:08x}, the guest played {crc:08x}")
    print(f"playback: stream0.wav holds the guest's {n} bytes exactly (crc32 {crc:08x})")

    n, crc = guest_line(console, "recorded")
    _, src = wav_data(f"{d}/capture.wav")
    want = (src * (n // len(src) + 1))[:n]
    got = zlib.crc32(want)
    if got != crc:
        sys.exit(f"the guest recorded crc32 {crc:08x}, capture.wav looped to {n} bytes is {got:08x}")
    print(f"capture: the guest recorded capture.wav looped, {n} bytes exactly (crc32 {crc:08x})")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "make-capture":
        make_capture(sys.argv[2], int(sys.argv[3]))
    elif len(sys.argv) == 3 and sys.argv[1] == "verify":
        verify(sys.argv[2])
    else:
        sys.exit(__doc__)
