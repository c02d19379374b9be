/*
 * rtc-guest: read the guest's virtio RTC clocks through the kernel's RTC and
 * PTP interfaces (busybox's hwclock cannot set alarms or read PTP clocks).
 * e2e/run builds it with `gcc -O2 -static` and puts it into the initramfs as
 * /usr/bin/rtc-guest; e2e/tests/rtc.sh uses it.
 *
 *   rtc-guest ptp-read DEV
 *       print the PTP clock's time in ns: clock_gettime() on the dynamic
 *       POSIX clock of DEV (/dev/ptpN), which the driver answers with one
 *       VIRTIO_RTC_REQ_READ
 *   rtc-guest ptp-sysoff DEV
 *       PTP_SYS_OFFSET with 5 samples: print "offset <ns>" (PTP clock minus
 *       the guest's CLOCK_REALTIME, from the middle sample) and the widest
 *       sample window in ns
 *   rtc-guest rtc-read DEV
 *       print RTC_RD_TIME of DEV (/dev/rtcN) as seconds since the epoch
 *   rtc-guest rtc-alarm DEV SECONDS TIMEOUT
 *       read the time T, set an alarm at T + SECONDS with RTC_WKALM_SET
 *       (enabled), read it back with RTC_WKALM_RD, then wait up to TIMEOUT
 *       seconds in read() for the alarm interrupt; it must carry RTC_AF, and
 *       the RTC must then read at least T + SECONDS.  Prints the times.
 *   rtc-guest rtc-alarm-off DEV SECONDS WAIT
 *       set an alarm at T + SECONDS, switch it off with RTC_AIE_OFF, and
 *       check that no interrupt comes within WAIT seconds
 *   rtc-guest rtc-set DEV SECONDS
 *       set an alarm at T + SECONDS (RTC_WKALM_SET, enabled) and exit
 *   rtc-guest rtc-alarm-read DEV
 *       print RTC_WKALM_RD: "enabled E pending P time T"
 *   rtc-guest rtc-quiet DEV WAIT
 *       check that no RTC interrupt comes within WAIT seconds
 *
 * Output lines start with "rtc-guest: ".  Exit status: 0 ok, 1 check
 * failed, 2 usage, 3 system call failure.  Everything is bounded by
 * alarm(120).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/ptp_clock.h>
#include <linux/rtc.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define FD_TO_CLOCKID(fd) ((~(clockid_t)(fd) << 3) | 3)

static void say(const char *fmt, ...)
{
	va_list ap;
	printf("rtc-guest: ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
}

static int sys_fail(const char *what)
{
	say("%s: %s", what, strerror(errno));
	return 3;
}

static int open_dev(const char *path)
{
	int fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		fd = open(path, O_RDONLY | O_CLOEXEC);
	return fd;
}

static int ptp_read(const char *dev)
{
	struct timespec ts;
	int fd = open_dev(dev);
	if (fd < 0)
		return sys_fail(dev);
	if (clock_gettime(FD_TO_CLOCKID(fd), &ts) != 0)
		return sys_fail("clock_gettime on the PTP clock");
	printf("%" PRIu64 "\n", (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec);
	return 0;
}

static int64_t ns(const struct ptp_clock_time *t)
{
	return t->sec * 1000000000LL + t->nsec;
}

static int ptp_sysoff(const char *dev)
{
	struct ptp_sys_offset off;
	int64_t widest = 0;
	int fd = open_dev(dev), i, mid;
	if (fd < 0)
		return sys_fail(dev);
	memset(&off, 0, sizeof(off));
	off.n_samples = 5;
	if (ioctl(fd, PTP_SYS_OFFSET, &off) != 0)
		return sys_fail("PTP_SYS_OFFSET");
	/* ts[2i] system, ts[2i+1] PTP clock, ts[2i+2] system. */
	for (i = 0; i < (int)off.n_samples; i++) {
		int64_t w = ns(&off.ts[2 * i + 2]) - ns(&off.ts[2 * i]);
		if (w > widest)
			widest = w;
	}
	mid = (int)off.n_samples / 2;
	say("offset %" PRId64 " ns (PTP - CLOCK_REALTIME), widest sample window %" PRId64 " ns",
	    ns(&off.ts[2 * mid + 1]) - (ns(&off.ts[2 * mid]) + ns(&off.ts[2 * mid + 2])) / 2, widest);
	return 0;
}

static int rtc_now(int fd, time_t *out)
{
	struct rtc_time tm;
	struct tm t;
	if (ioctl(fd, RTC_RD_TIME, &tm) != 0)
		return -1;
	memset(&t, 0, sizeof(t));
	t.tm_sec = tm.tm_sec;
	t.tm_min = tm.tm_min;
	t.tm_hour = tm.tm_hour;
	t.tm_mday = tm.tm_mday;
	t.tm_mon = tm.tm_mon;
	t.tm_year = tm.tm_year;
	*out = timegm(&t);
	return 0;
}

static int rtc_read(const char *dev)
{
	time_t t;
	int fd = open_dev(dev);
	if (fd < 0)
		return sys_fail(dev);
	if (rtc_now(fd, &t) != 0)
		return sys_fail("RTC_RD_TIME");
	printf("%lld\n", (long long)t);
	return 0;
}

static int set_alarm(int fd, time_t at)
{
	struct rtc_wkalrm w;
	struct tm t;
	memset(&w, 0, sizeof(w));
	gmtime_r(&at, &t);
	w.enabled = 1;
	w.time.tm_sec = t.tm_sec;
	w.time.tm_min = t.tm_min;
	w.time.tm_hour = t.tm_hour;
	w.time.tm_mday = t.tm_mday;
	w.time.tm_mon = t.tm_mon;
	w.time.tm_year = t.tm_year;
	w.time.tm_wday = -1;
	w.time.tm_yday = -1;
	w.time.tm_isdst = -1;
	return ioctl(fd, RTC_WKALM_SET, &w);
}

/* Wait up to `secs` for the alarm interrupt: 1 got it (data in *data), 0 none. */
static int wait_irq(int fd, int secs, unsigned long *data)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	int n = poll(&p, 1, secs * 1000);
	if (n < 0)
		return -1;
	if (n == 0)
		return 0;
	if (read(fd, data, sizeof(*data)) != (ssize_t)sizeof(*data))
		return -1;
	return 1;
}

static int rtc_alarm(const char *dev, int secs, int timeout)
{
	struct rtc_wkalrm back;
	struct timespec t0, t1;
	unsigned long data = 0;
	time_t now, at, after;
	int fd = open_dev(dev), r;
	if (fd < 0)
		return sys_fail(dev);
	if (rtc_now(fd, &now) != 0)
		return sys_fail("RTC_RD_TIME");
	at = now + secs;
	if (set_alarm(fd, at) != 0)
		return sys_fail("RTC_WKALM_SET");
	memset(&back, 0, sizeof(back));
	if (ioctl(fd, RTC_WKALM_RD, &back) != 0)
		return sys_fail("RTC_WKALM_RD");
	say("time %lld, alarm set for %lld, read back enabled=%d %02d:%02d:%02d", (long long)now,
	    (long long)at, back.enabled, back.time.tm_hour, back.time.tm_min, back.time.tm_sec);
	if (!back.enabled) {
		say("the alarm reads back disabled");
		return 1;
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	r = wait_irq(fd, timeout, &data);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	if (r < 0)
		return sys_fail("waiting for the alarm interrupt");
	if (r == 0) {
		say("no alarm interrupt within %d s", timeout);
		return 1;
	}
	if (rtc_now(fd, &after) != 0)
		return sys_fail("RTC_RD_TIME after the alarm");
	say("alarm interrupt: data %#lx (count %lu) after %.3f s; the RTC reads %lld", data, data >> 8,
	    (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9,
	    (long long)after);
	if (!(data & RTC_AF)) {
		say("the interrupt does not carry RTC_AF");
		return 1;
	}
	if (after < at) {
		say("the alarm came before its time: RTC %lld < alarm %lld", (long long)after, (long long)at);
		return 1;
	}
	return 0;
}

static int rtc_alarm_off(const char *dev, int secs, int wait)
{
	unsigned long data = 0;
	time_t now;
	int fd = open_dev(dev), r;
	if (fd < 0)
		return sys_fail(dev);
	if (rtc_now(fd, &now) != 0)
		return sys_fail("RTC_RD_TIME");
	if (set_alarm(fd, now + secs) != 0)
		return sys_fail("RTC_WKALM_SET");
	if (ioctl(fd, RTC_AIE_OFF, 0) != 0)
		return sys_fail("RTC_AIE_OFF");
	r = wait_irq(fd, wait, &data);
	if (r < 0)
		return sys_fail("poll");
	if (r > 0) {
		say("an alarm switched off still interrupted: data %#lx", data);
		return 1;
	}
	say("no interrupt within %d s from the alarm switched off", wait);
	return 0;
}

static int rtc_set(const char *dev, int secs)
{
	time_t now;
	int fd = open_dev(dev);
	if (fd < 0)
		return sys_fail(dev);
	if (rtc_now(fd, &now) != 0)
		return sys_fail("RTC_RD_TIME");
	if (set_alarm(fd, now + secs) != 0)
		return sys_fail("RTC_WKALM_SET");
	say("time %lld, alarm set for %lld", (long long)now, (long long)(now + secs));
	return 0;
}

static int rtc_alarm_read(const char *dev)
{
	struct rtc_wkalrm w;
	struct tm t;
	int fd = open_dev(dev);
	if (fd < 0)
		return sys_fail(dev);
	memset(&w, 0, sizeof(w));
	if (ioctl(fd, RTC_WKALM_RD, &w) != 0)
		return sys_fail("RTC_WKALM_RD");
	memset(&t, 0, sizeof(t));
	t.tm_sec = w.time.tm_sec;
	t.tm_min = w.time.tm_min;
	t.tm_hour = w.time.tm_hour;
	t.tm_mday = w.time.tm_mday;
	t.tm_mon = w.time.tm_mon;
	t.tm_year = w.time.tm_year;
	printf("enabled %d pending %d time %lld\n", w.enabled, w.pending, (long long)timegm(&t));
	return 0;
}

static int rtc_quiet(const char *dev, int wait)
{
	unsigned long data = 0;
	int fd = open_dev(dev), r;
	if (fd < 0)
		return sys_fail(dev);
	r = wait_irq(fd, wait, &data);
	if (r < 0)
		return sys_fail("poll");
	if (r > 0) {
		say("an RTC interrupt nobody asked for: data %#lx", data);
		return 1;
	}
	say("no RTC interrupt within %d s", wait);
	return 0;
}

int main(int argc, char **argv)
{
	alarm(120);
	if (argc == 3 && !strcmp(argv[1], "ptp-read"))
		return ptp_read(argv[2]);
	if (argc == 3 && !strcmp(argv[1], "ptp-sysoff"))
		return ptp_sysoff(argv[2]);
	if (argc == 3 && !strcmp(argv[1], "rtc-read"))
		return rtc_read(argv[2]);
	if (argc == 5 && !strcmp(argv[1], "rtc-alarm"))
		return rtc_alarm(argv[2], atoi(argv[3]), atoi(argv[4]));
	if (argc == 5 && !strcmp(argv[1], "rtc-alarm-off"))
		return rtc_alarm_off(argv[2], atoi(argv[3]), atoi(argv[4]));
	if (argc == 4 && !strcmp(argv[1], "rtc-set"))
		return rtc_set(argv[2], atoi(argv[3]));
	if (argc == 3 && !strcmp(argv[1], "rtc-alarm-read"))
		return rtc_alarm_read(argv[2]);
	if (argc == 4 && !strcmp(argv[1], "rtc-quiet"))
		return rtc_quiet(argv[2], atoi(argv[3]));
	fprintf(stderr, "usage: rtc-guest ptp-read|ptp-sysoff|rtc-read DEV | rtc-alarm|rtc-alarm-off DEV SECONDS TIMEOUT\n");
	return 2;
}
