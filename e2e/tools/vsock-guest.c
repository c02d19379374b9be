/*
 * vsock-guest: AF_VSOCK stream transfers for the e2e guest (busybox has no
 * vsock tool).  e2e/run builds it with `gcc -O2 -static` and puts it into the
 * initramfs as /usr/bin/vsock-guest; e2e/tests/vsock.sh uses it, and
 * e2e/tools/vsock-host.py is the host side.
 *
 *   vsock-guest cid
 *       print the guest's own CID (IOCTL_VM_SOCKETS_GET_LOCAL_CID on /dev/vsock)
 *   vsock-guest pattern BYTES SEED
 *       print the crc32 of BYTES bytes of the pattern for SEED (self-check
 *       against vsock-host.py)
 *   vsock-guest send CID PORT BYTES SEED CHUNK
 *       connect to CID:PORT, send BYTES bytes of the pattern for SEED with one
 *       write() per CHUNK bytes (each write must be accepted whole), then
 *       shutdown(SHUT_WR) and read the peer's reply line
 *       "OK <bytes> <crc32>" up to EOF; exit 0 if it matches what was sent
 *   vsock-guest recv PORT BYTES SEED
 *       listen on VMADDR_CID_ANY:PORT (prints "listening" once it does),
 *       accept one connection, read up to EOF, check that exactly BYTES bytes
 *       of the pattern for SEED arrived, reply "OK <bytes> <crc32>\n" (or
 *       "BAD ...\n") and close; exit 0 if the data was right
 *   vsock-guest refused CID PORT
 *       connect to CID:PORT where nobody listens: must fail promptly with
 *       ECONNRESET or ECONNREFUSED (not time out, not succeed)
 *   vsock-guest sink PORT BYTES
 *       listen on VMADDR_CID_ANY:PORT (prints "listening"), accept one
 *       connection, read up to EOF, print "received <n> bytes ... crc32 <crc>"
 *       and close; exit 0 if exactly BYTES bytes came before EOF (the data is
 *       not checked here: the sender's CRC is compared by the caller)
 *   vsock-guest source CID PORT BYTES SEED
 *       connect to CID:PORT, send BYTES bytes of the pattern for SEED (write()
 *       calls of whatever size the kernel takes), print "sent <n> bytes ...
 *       crc32 <crc>", then
 *       shutdown(SHUT_WR) and wait for the peer to close (EOF or reset);
 *       exit 0 if it closed without sending anything, 5 if the data was sent
 *       but the peer sent data back
 *   (e2e/tests/vsock-forward.sh uses these two with a program that is not a
 *   vsock-guest on the other end, so they check byte counts only and print
 *   the CRC for the test to compare.)
 *
 * The pattern: splitmix64 words from state SEED, each stored little-endian;
 * byte i of the stream is byte i%8 of word i/8.  The checksum is CRC-32
 * (IEEE, as zlib.crc32), printed as 8 lowercase hex digits.  Everything is
 * bounded by alarm(VSOCK_GUEST_TIMEOUT seconds, default 60).
 *
 * Output lines start with "vsock-guest: "; errors go to stdout too, so the
 * test can show them.  Exit status: 0 ok, 1 data or protocol mismatch,
 * 2 usage, 3 system call failure, 4 timeout, 5 (source) the peer sent data.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

static const char *phase = "starting";
static volatile size_t progress;   /* bytes moved so far, for the timeout message */

static void say(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("vsock-guest: ", stdout);
	vprintf(fmt, ap);
	fputc('\n', stdout);
	fflush(stdout);
	va_end(ap);
}

static void die_errno(int status, const char *what)
{
	int e = errno;
	say("%s failed: %s (errno %d)", what, strerror(e), e);
	exit(status);
}

static void on_alarm(int sig)
{
	char msg[200];
	int n;
	(void)sig;
	n = snprintf(msg, sizeof msg, "vsock-guest: TIMEOUT while %s (%zu bytes moved)\n",
		     phase, (size_t)progress);
	if (n > 0)
		(void)!write(1, msg, (size_t)n);
	_exit(4);
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static unsigned long long number(const char *s, const char *what)
{
	char *end;
	unsigned long long v;
	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || *s == '\0' || *end != '\0') {
		say("bad %s: '%s'", what, s);
		exit(2);
	}
	return v;
}

/* ---- the pattern and the checksum ----------------------------------------- */

static void pattern(unsigned char *buf, size_t len, uint64_t seed)
{
	uint64_t x = seed, z;
	size_t i, j;
	for (i = 0; i < len; i += 8) {
		x += 0x9E3779B97F4A7C15ULL;
		z = x;
		z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
		z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
		z ^= z >> 31;
		for (j = 0; j < 8 && i + j < len; j++)
			buf[i + j] = (unsigned char)(z >> (8 * j));
	}
}

static uint32_t crc_table[256];

static uint32_t crc32(const unsigned char *buf, size_t len)
{
	uint32_t c = 0xFFFFFFFFu;
	size_t i;
	if (!crc_table[1]) {
		for (uint32_t n = 0; n < 256; n++) {
			uint32_t v = n;
			for (int k = 0; k < 8; k++)
				v = v & 1 ? 0xEDB88320u ^ (v >> 1) : v >> 1;
			crc_table[n] = v;
		}
	}
	for (i = 0; i < len; i++)
		c = crc_table[(c ^ buf[i]) & 0xFF] ^ (c >> 8);
	return c ^ 0xFFFFFFFFu;
}

static unsigned char *xmalloc(size_t n)
{
	unsigned char *p = malloc(n ? n : 1);
	if (!p) {
		say("out of memory (%zu bytes)", n);
		exit(3);
	}
	return p;
}

static double mib_per_s(size_t bytes, double secs)
{
	return secs > 0 ? (double)bytes / 1048576.0 / secs : 0.0;
}

/* ---- modes ----------------------------------------------------------------- */

static int cmd_cid(void)
{
	unsigned int cid = 0;
	int fd = open("/dev/vsock", O_RDONLY);
	if (fd < 0)
		die_errno(3, "open /dev/vsock");
	if (ioctl(fd, IOCTL_VM_SOCKETS_GET_LOCAL_CID, &cid) < 0)
		die_errno(3, "IOCTL_VM_SOCKETS_GET_LOCAL_CID");
	printf("%u\n", cid);
	return 0;
}

static int cmd_send(unsigned cid, unsigned port, size_t bytes, uint64_t seed, size_t chunk)
{
	struct sockaddr_vm sa = { .svm_family = AF_VSOCK, .svm_cid = cid, .svm_port = port };
	unsigned char *buf = xmalloc(bytes);
	char reply[256], want[64];
	size_t off, got = 0, writes = 0;
	uint32_t crc;
	double t0, t1, t2;
	ssize_t n;
	int fd;

	if (chunk == 0) {
		say("CHUNK must be > 0");
		return 2;
	}
	pattern(buf, bytes, seed);
	crc = crc32(buf, bytes);
	fd = socket(AF_VSOCK, SOCK_STREAM, 0);
	if (fd < 0)
		die_errno(3, "socket(AF_VSOCK, SOCK_STREAM)");
	phase = "connecting";
	t0 = now();
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
		char what[64];
		snprintf(what, sizeof what, "connect to %u:%u", cid, port);
		die_errno(3, what);
	}
	t1 = now();
	say("connected to %u:%u in %.3f s", cid, port, t1 - t0);
	phase = "sending";
	for (off = 0; off < bytes; off += (size_t)n) {
		size_t len = bytes - off < chunk ? bytes - off : chunk;
		n = write(fd, buf + off, len);
		if (n < 0) {
			char what[96];
			snprintf(what, sizeof what, "write #%zu of %zu bytes at offset %zu",
				 writes + 1, len, off);
			die_errno(3, what);
		}
		writes++;
		progress = off + (size_t)n;
		if ((size_t)n != len) {
			say("write #%zu at offset %zu returned %zd of %zu bytes: "
			    "a blocking stream write must take the whole buffer", writes, off, n, len);
			return 1;
		}
	}
	t2 = now();
	say("sent %zu bytes in %zu write() calls of up to %zu bytes in %.3f s (%.1f MiB/s), crc32 %08" PRIx32,
	    bytes, writes, chunk, t2 - t1, mib_per_s(bytes, t2 - t1), crc);
	phase = "shutting down the send direction";
	if (shutdown(fd, SHUT_WR) < 0)
		die_errno(3, "shutdown(SHUT_WR)");
	phase = "waiting for the peer's reply (and EOF)";
	for (;;) {
		if (got == sizeof reply - 1) {
			say("reply longer than %zu bytes", sizeof reply - 1);
			return 1;
		}
		n = read(fd, reply + got, sizeof reply - 1 - got);
		if (n < 0)
			die_errno(3, "read of the reply");
		if (n == 0)
			break;
		got += (size_t)n;
	}
	reply[got] = '\0';
	close(fd);
	snprintf(want, sizeof want, "OK %zu %08" PRIx32 "\n", bytes, crc);
	if (strcmp(reply, want) != 0) {
		reply[strcspn(reply, "\n")] = '\0';
		say("peer replied '%s' (%zu bytes), wanted '%.*s'", reply, got,
		    (int)strlen(want) - 1, want);
		return 1;
	}
	say("peer replied: OK %zu %08" PRIx32 " (matches) after %.3f s in all", bytes, crc, now() - t0);
	return 0;
}

/* Listen on `port` (any CID), accept one connection and stop listening. */
static int accept_one(unsigned port)
{
	struct sockaddr_vm sa = { .svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY, .svm_port = port };
	struct sockaddr_vm peer;
	socklen_t plen = sizeof peer;
	int lfd, fd;

	lfd = socket(AF_VSOCK, SOCK_STREAM, 0);
	if (lfd < 0)
		die_errno(3, "socket(AF_VSOCK, SOCK_STREAM)");
	if (bind(lfd, (struct sockaddr *)&sa, sizeof sa) < 0)
		die_errno(3, "bind");
	if (listen(lfd, 1) < 0)
		die_errno(3, "listen");
	say("listening on port %u", port);
	phase = "waiting for a connection";
	fd = accept(lfd, (struct sockaddr *)&peer, &plen);
	if (fd < 0)
		die_errno(3, "accept");
	close(lfd);
	say("accepted a connection from %u:%u", peer.svm_cid, peer.svm_port);
	return fd;
}

static int cmd_recv(unsigned port, size_t bytes, uint64_t seed)
{
	unsigned char *buf = xmalloc(bytes + 1), *want = xmalloc(bytes);
	size_t got = 0, reads = 0, maxread = 0, i;
	char reply[128];
	uint32_t crc;
	double t0, t1;
	ssize_t n;
	int fd, ok;

	pattern(want, bytes, seed);
	fd = accept_one(port);
	phase = "receiving";
	t0 = now();
	/* Read up to EOF (the host shuts down its sending side), into room for
	 * one byte more than expected so that excess data is noticed. */
	while (got <= bytes) {
		n = read(fd, buf + got, bytes + 1 - got);
		if (n < 0)
			die_errno(3, "read");
		if (n == 0)
			break;
		reads++;
		if ((size_t)n > maxread)
			maxread = (size_t)n;
		got += (size_t)n;
		progress = got;
	}
	t1 = now();
	crc = crc32(buf, got);
	say("received %zu bytes in %zu read() calls (largest %zu) in %.3f s (%.1f MiB/s), crc32 %08" PRIx32,
	    got, reads, maxread, t1 - t0, mib_per_s(got, t1 - t0), crc);
	ok = got == bytes && memcmp(buf, want, bytes) == 0;
	if (got > bytes) {
		say("more than the %zu bytes expected arrived (no EOF after them)", bytes);
	} else if (got < bytes) {
		say("EOF after %zu of %zu bytes", got, bytes);
	}
	if (!ok) {
		size_t lim = got < bytes ? got : bytes;
		for (i = 0; i < lim && buf[i] == want[i]; i++)
			;
		if (i < lim)
			say("first difference from the pattern at byte %zu (0x%02x, wanted 0x%02x)",
			    i, buf[i], want[i]);
		snprintf(reply, sizeof reply, "BAD %zu %08" PRIx32 "\n", got, crc);
	} else {
		snprintf(reply, sizeof reply, "OK %zu %08" PRIx32 "\n", got, crc);
	}
	phase = "writing the reply (a blocking vsock write waits only for send credit from the peer)";
	if (write(fd, reply, strlen(reply)) != (ssize_t)strlen(reply))
		die_errno(3, "write of the reply");
	phase = "closing after the reply";
	close(fd);
	reply[strcspn(reply, "\n")] = '\0';
	say("replied '%s'", reply);
	if (ok)
		say("data matches the pattern for seed %" PRIu64, seed);
	return ok ? 0 : 1;
}

static int cmd_refused(unsigned cid, unsigned port)
{
	struct sockaddr_vm sa = { .svm_family = AF_VSOCK, .svm_cid = cid, .svm_port = port };
	double t0;
	int fd = socket(AF_VSOCK, SOCK_STREAM, 0), e;
	if (fd < 0)
		die_errno(3, "socket(AF_VSOCK, SOCK_STREAM)");
	phase = "connecting (expecting a refusal)";
	t0 = now();
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) {
		say("connect to %u:%u succeeded, but nobody listens there", cid, port);
		return 1;
	}
	e = errno;
	say("connect to %u:%u failed after %.3f s: %s (errno %d)", cid, port, now() - t0, strerror(e), e);
	if (e != ECONNRESET && e != ECONNREFUSED) {
		say("wanted ECONNRESET or ECONNREFUSED (the device answering the request with RST)");
		return 1;
	}
	return 0;
}

static int cmd_sink(unsigned port, size_t bytes)
{
	unsigned char *buf = xmalloc(bytes + 1);
	size_t got = 0, reads = 0, maxread = 0;
	uint32_t crc;
	double t0, t1;
	ssize_t n;
	int fd;

	fd = accept_one(port);
	phase = "receiving";
	t0 = now();
	while (got <= bytes) {
		n = read(fd, buf + got, bytes + 1 - got);
		if (n < 0)
			die_errno(3, "read");
		if (n == 0)
			break;
		reads++;
		if ((size_t)n > maxread)
			maxread = (size_t)n;
		got += (size_t)n;
		progress = got;
		if (got == bytes)
			phase = "waiting for EOF after all the expected bytes";
	}
	t1 = now();
	crc = crc32(buf, got);
	say("received %zu bytes in %zu read() calls (largest %zu) in %.3f s (%.1f MiB/s), crc32 %08" PRIx32,
	    got, reads, maxread, t1 - t0, mib_per_s(got, t1 - t0), crc);
	close(fd);
	if (got > bytes) {
		say("more than the %zu bytes expected arrived (no EOF after them)", bytes);
		return 1;
	}
	if (got < bytes) {
		say("EOF after %zu of %zu bytes", got, bytes);
		return 1;
	}
	say("EOF after exactly %zu bytes", bytes);
	return 0;
}

static int cmd_source(unsigned cid, unsigned port, size_t bytes, uint64_t seed)
{
	struct sockaddr_vm sa = { .svm_family = AF_VSOCK, .svm_cid = cid, .svm_port = port };
	unsigned char *buf = xmalloc(bytes), junk[4096], first[48];
	size_t off, writes = 0, extra = 0, i;
	char shown[4 * sizeof first + 1], *q = shown;
	uint32_t crc;
	double t0, t1, t2;
	ssize_t n;
	int fd, e;

	pattern(buf, bytes, seed);
	crc = crc32(buf, bytes);
	fd = socket(AF_VSOCK, SOCK_STREAM, 0);
	if (fd < 0)
		die_errno(3, "socket(AF_VSOCK, SOCK_STREAM)");
	phase = "connecting";
	t0 = now();
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
		char what[64];
		snprintf(what, sizeof what, "connect to %u:%u", cid, port);
		die_errno(3, what);
	}
	t1 = now();
	say("connected to %u:%u in %.3f s", cid, port, t1 - t0);
	phase = "sending";
	for (off = 0; off < bytes; off += (size_t)n) {
		n = write(fd, buf + off, bytes - off);
		if (n < 0) {
			char what[96];
			snprintf(what, sizeof what, "write at offset %zu", off);
			die_errno(3, what);
		}
		writes++;
		progress = off + (size_t)n;
	}
	t2 = now();
	say("sent %zu bytes in %zu write() calls in %.3f s (%.1f MiB/s), crc32 %08" PRIx32,
	    bytes, writes, t2 - t1, mib_per_s(bytes, t2 - t1), crc);
	phase = "shutting down the send direction";
	if (shutdown(fd, SHUT_WR) < 0)
		die_errno(3, "shutdown(SHUT_WR)");
	phase = "waiting for the peer to close (all data was sent)";
	for (;;) {
		n = read(fd, junk, sizeof junk);
		if (n < 0) {
			e = errno;
			if (e == ECONNRESET || e == EPIPE) {
				say("peer reset the connection %.3f s after the data was sent", now() - t2);
				break;
			}
			die_errno(3, "read while waiting for the peer to close");
		}
		if (n == 0) {
			say("peer closed (EOF) %.3f s after the data was sent", now() - t2);
			break;
		}
		for (i = 0; i < (size_t)n && extra + i < sizeof first; i++)
			first[extra + i] = junk[i];
		extra += (size_t)n;
	}
	close(fd);
	if (extra) {
		for (i = 0; i < extra && i < sizeof first; i++) {
			unsigned char c = first[i];
			if (c >= 0x20 && c < 0x7f && c != '\\')
				*q++ = (char)c;
			else if (c == '\n')
				q += sprintf(q, "\\n");
			else
				q += sprintf(q, "\\x%02x", c);
		}
		*q = '\0';
		say("the peer sent %zu bytes back, it should have sent none: \"%s\"%s", extra, shown,
		    extra > sizeof first ? "..." : "");
		return 5;
	}
	return 0;
}

int main(int argc, char **argv)
{
	const char *t = getenv("VSOCK_GUEST_TIMEOUT");
	unsigned timeout = t ? (unsigned)number(t, "VSOCK_GUEST_TIMEOUT") : 60;

	signal(SIGALRM, on_alarm);
	signal(SIGPIPE, SIG_IGN);
	alarm(timeout);
	if (argc == 2 && !strcmp(argv[1], "cid"))
		return cmd_cid();
	if (argc == 4 && !strcmp(argv[1], "pattern")) {
		size_t n = (size_t)number(argv[2], "BYTES");
		unsigned char *buf = xmalloc(n);
		pattern(buf, n, number(argv[3], "SEED"));
		printf("%08" PRIx32 "\n", crc32(buf, n));
		return 0;
	}
	if (argc == 7 && !strcmp(argv[1], "send"))
		return cmd_send((unsigned)number(argv[2], "CID"), (unsigned)number(argv[3], "PORT"),
				(size_t)number(argv[4], "BYTES"), number(argv[5], "SEED"),
				(size_t)number(argv[6], "CHUNK"));
	if (argc == 5 && !strcmp(argv[1], "recv"))
		return cmd_recv((unsigned)number(argv[2], "PORT"), (size_t)number(argv[3], "BYTES"),
				number(argv[4], "SEED"));
	if (argc == 4 && !strcmp(argv[1], "refused"))
		return cmd_refused((unsigned)number(argv[2], "CID"), (unsigned)number(argv[3], "PORT"));
	if (argc == 4 && !strcmp(argv[1], "sink"))
		return cmd_sink((unsigned)number(argv[2], "PORT"), (size_t)number(argv[3], "BYTES"));
	if (argc == 6 && !strcmp(argv[1], "source"))
		return cmd_source((unsigned)number(argv[2], "CID"), (unsigned)number(argv[3], "PORT"),
				  (size_t)number(argv[4], "BYTES"), number(argv[5], "SEED"));
	fprintf(stderr,
		"usage: vsock-guest cid\n"
		"       vsock-guest pattern BYTES SEED\n"
		"       vsock-guest send CID PORT BYTES SEED CHUNK\n"
		"       vsock-guest recv PORT BYTES SEED\n"
		"       vsock-guest refused CID PORT\n"
		"       vsock-guest sink PORT BYTES\n"
		"       vsock-guest source CID PORT BYTES SEED\n");
	return 2;
}
