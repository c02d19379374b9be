#!/usr/bin/env python3
"""A minimal vhost-user virtio-rng backend, for testing the e2e harness itself.

Usage: fake-vhost-user-rng.py SOCKET_PATH

It exists so that the harness (QEMU, kernel, initramfs, guest rng test) can be
checked without any of the workspace's daemons: `e2e/run selftest-rng`.
It serves one frontend connection, one split virtqueue, and fills every
device-writable buffer with os.urandom() bytes.  Not a reference for anything.
"""
import array
import mmap
import os
import select
import socket
import struct
import sys

# Front-end request codes (vhost-user protocol).
GET_FEATURES = 1
SET_FEATURES = 2
SET_OWNER = 3
RESET_OWNER = 4
SET_MEM_TABLE = 5
SET_LOG_BASE = 6
SET_LOG_FD = 7
SET_VRING_NUM = 8
SET_VRING_ADDR = 9
SET_VRING_BASE = 10
GET_VRING_BASE = 11
SET_VRING_KICK = 12
SET_VRING_CALL = 13
SET_VRING_ERR = 14
GET_PROTOCOL_FEATURES = 15
SET_PROTOCOL_FEATURES = 16
GET_QUEUE_NUM = 17
SET_VRING_ENABLE = 18

FLAG_VERSION = 0x1
FLAG_REPLY = 0x4
FLAG_NEED_REPLY = 0x8

F_VERSION_1 = 1 << 32
F_PROTOCOL_FEATURES = 1 << 30
PROTO_F_MQ = 1 << 0
PROTO_F_REPLY_ACK = 1 << 3

DESC_F_NEXT = 1
DESC_F_WRITE = 2


def log(msg):
    print(f"fake-rng: {msg}", file=sys.stderr, flush=True)


class Region:
    def __init__(self, gpa, size, uaddr, offset, fd):
        self.gpa, self.size, self.uaddr = gpa, size, uaddr
        self.map = mmap.mmap(fd, size + offset, mmap.MAP_SHARED,
                             mmap.PROT_READ | mmap.PROT_WRITE)
        self.offset = offset
        os.close(fd)


class Backend:
    def __init__(self, conn):
        self.conn = conn
        self.regions = []
        self.num = 0
        self.desc = self.avail = self.used = None   # (region, offset) pairs
        self.last_avail = 0
        self.kick = self.call = None
        self.enabled = False
        self.proto = 0

    # -- memory -------------------------------------------------------------
    def _find(self, addr, by_uaddr):
        for r in self.regions:
            base = r.uaddr if by_uaddr else r.gpa
            if base <= addr < base + r.size:
                return r, r.offset + addr - base
        raise ValueError(f"address {addr:#x} not in guest memory")

    def read(self, gpa, n):
        r, off = self._find(gpa, False)
        return r.map[off:off + n]

    def write(self, gpa, data):
        r, off = self._find(gpa, False)
        r.map[off:off + len(data)] = data

    # -- virtqueue ----------------------------------------------------------
    def process(self):
        if not (self.enabled and self.desc and self.num):
            return
        dr, doff = self.desc
        ar, aoff = self.avail
        ur, uoff = self.used
        served = 0
        while True:
            avail_idx = struct.unpack_from("<H", ar.map, aoff + 2)[0]
            if self.last_avail == avail_idx:
                break
            slot = self.last_avail % self.num
            head = struct.unpack_from("<H", ar.map, aoff + 4 + 2 * slot)[0]
            i, total = head, 0
            while True:
                addr, length, flags, nxt = struct.unpack_from("<QIHH", dr.map, doff + 16 * i)
                if flags & DESC_F_WRITE:
                    self.write(addr, os.urandom(length))
                    total += length
                if not flags & DESC_F_NEXT:
                    break
                i = nxt
            used_idx = struct.unpack_from("<H", ur.map, uoff + 2)[0]
            struct.pack_into("<II", ur.map, uoff + 4 + 8 * (used_idx % self.num), head, total)
            struct.pack_into("<H", ur.map, uoff + 2, (used_idx + 1) & 0xFFFF)
            self.last_avail = (self.last_avail + 1) & 0xFFFF
            served += 1
        if served and self.call is not None:
            os.write(self.call, struct.pack("<Q", 1))

    # -- protocol -----------------------------------------------------------
    def recv(self):
        fds = array.array("i")
        hdr, anc, _, _ = self.conn.recvmsg(12, socket.CMSG_SPACE(8 * 4))
        if len(hdr) < 12:
            return None
        for level, typ, data in anc:
            if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
                fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
        req, flags, size = struct.unpack("<III", hdr)
        payload = b""
        while len(payload) < size:
            chunk = self.conn.recv(size - len(payload))
            if not chunk:
                return None
            payload += chunk
        return req, flags, payload, list(fds)

    def reply(self, req, payload):
        self.conn.sendall(struct.pack("<III", req, FLAG_VERSION | FLAG_REPLY, len(payload)) + payload)

    def handle(self, req, flags, p, fds):
        u64 = lambda: struct.unpack_from("<Q", p)[0]
        if req == GET_FEATURES:
            self.reply(req, struct.pack("<Q", F_VERSION_1 | F_PROTOCOL_FEATURES))
        elif req == GET_PROTOCOL_FEATURES:
            self.reply(req, struct.pack("<Q", PROTO_F_MQ | PROTO_F_REPLY_ACK))
        elif req == SET_PROTOCOL_FEATURES:
            self.proto = u64()
        elif req == GET_QUEUE_NUM:
            self.reply(req, struct.pack("<Q", 1))
        elif req == SET_MEM_TABLE:
            for r in self.regions:
                r.map.close()
            nregions = struct.unpack_from("<I", p)[0]
            self.regions = []
            for n in range(nregions):
                gpa, size, uaddr, off = struct.unpack_from("<QQQQ", p, 8 + 32 * n)
                self.regions.append(Region(gpa, size, uaddr, off, fds[n]))
            fds = []
        elif req == SET_VRING_NUM:
            self.num = struct.unpack_from("<II", p)[1]
        elif req == SET_VRING_BASE:
            self.last_avail = struct.unpack_from("<II", p)[1]
        elif req == SET_VRING_ADDR:
            _, _, desc, used, avail, _ = struct.unpack_from("<IIQQQQ", p)
            self.desc = self._find(desc, True)
            self.used = self._find(used, True)
            self.avail = self._find(avail, True)
        elif req == GET_VRING_BASE:
            self.enabled = False
            self.reply(req, struct.pack("<II", 0, self.last_avail))
        elif req in (SET_VRING_KICK, SET_VRING_CALL, SET_VRING_ERR):
            index = u64()
            fd = None if index & 0x100 else fds.pop(0)
            if req == SET_VRING_KICK:
                if self.kick is not None:
                    os.close(self.kick)
                self.kick = fd  # the ring is enabled by SET_VRING_ENABLE
            elif req == SET_VRING_CALL:
                if self.call is not None:
                    os.close(self.call)
                self.call = fd
            elif fd is not None:
                os.close(fd)
        elif req == SET_VRING_ENABLE:
            self.enabled = bool(struct.unpack_from("<II", p)[1])
            self.process()
        # SET_FEATURES, SET_OWNER, RESET_OWNER, SET_LOG_*: nothing to do
        for fd in fds:
            os.close(fd)
        if flags & FLAG_NEED_REPLY and req not in (GET_FEATURES, GET_PROTOCOL_FEATURES,
                                                   GET_QUEUE_NUM, GET_VRING_BASE):
            self.reply(req, struct.pack("<Q", 0))

    def run(self):
        while True:
            watch = [self.conn] + ([self.kick] if self.kick is not None else [])
            ready, _, _ = select.select(watch, [], [])
            if self.kick is not None and self.kick in ready:
                os.read(self.kick, 8)
                self.process()
            if self.conn in ready:
                msg = self.recv()
                if msg is None:
                    log("frontend disconnected")
                    return
                self.handle(*msg)


def main():
    path = sys.argv[1]
    if os.path.exists(path):
        os.unlink(path)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    log(f"listening on {path}")
    conn, _ = srv.accept()
    log("frontend connected")
    Backend(conn).run()


if __name__ == "__main__":
    main()
