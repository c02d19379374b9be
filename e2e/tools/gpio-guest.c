// Copyright 2026 vhost-device developers
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//
// gpio-guest: the guest side of the gpio e2e test, through the GPIO
// character device, uAPI v2 (linux/gpio.h); busybox has no GPIO applet.
//
//   gpio-guest chips                      every /dev/gpiochipN: "gpiochipN LABEL LINES"
//   gpio-guest names CHIP                 the line names, comma-separated
//   gpio-guest get CHIP LINE              request LINE as input, print its value
//   gpio-guest out CHIP LINE VALUE MS     request LINE as output driving VALUE,
//                                         print "holding", hold it MS ms (or
//                                         until killed), then release it
//   gpio-guest edge CHIP LINE rising|falling|both COUNT MS
//                                         request LINE as input with edge
//                                         detection, print "armed", then one
//                                         line "event rising|falling" per edge
//                                         until COUNT edges; exit 3 after MS ms
//
// CHIP is a path (/dev/gpiochip1). Output is flushed line by line.
#include <errno.h>
#include <fcntl.h>
#include <linux/gpio.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>

static void die(const char *what)
{
	fprintf(stderr, "gpio-guest: %s: %s\n", what, strerror(errno));
	exit(2);
}

static int open_chip(const char *path)
{
	int fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		die(path);
	return fd;
}

static long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int request(int chip, unsigned line, __u64 flags, int value)
{
	struct gpio_v2_line_request req;
	memset(&req, 0, sizeof(req));
	req.offsets[0] = line;
	req.num_lines = 1;
	strcpy(req.consumer, "gpio-guest");
	req.config.flags = flags;
	if (flags & GPIO_V2_LINE_FLAG_OUTPUT) {
		req.config.num_attrs = 1;
		req.config.attrs[0].attr.id = GPIO_V2_LINE_ATTR_ID_OUTPUT_VALUES;
		req.config.attrs[0].attr.values = value ? 1 : 0;
		req.config.attrs[0].mask = 1;
	}
	if (ioctl(chip, GPIO_V2_GET_LINE_IOCTL, &req) < 0)
		die("GPIO_V2_GET_LINE_IOCTL");
	return req.fd;
}

static int chips(void)
{
	DIR *d = opendir("/dev");
	struct dirent *e;
	if (!d)
		die("/dev");
	while ((e = readdir(d))) {
		char path[300];
		struct gpiochip_info info;
		int fd;
		if (strncmp(e->d_name, "gpiochip", 8))
			continue;
		snprintf(path, sizeof(path), "/dev/%s", e->d_name);
		fd = open_chip(path);
		if (ioctl(fd, GPIO_GET_CHIPINFO_IOCTL, &info) < 0)
			die("GPIO_GET_CHIPINFO_IOCTL");
		printf("%s %s %u\n", e->d_name, info.label, info.lines);
		close(fd);
	}
	closedir(d);
	return 0;
}

static int names(const char *path)
{
	int fd = open_chip(path);
	struct gpiochip_info info;
	if (ioctl(fd, GPIO_GET_CHIPINFO_IOCTL, &info) < 0)
		die("GPIO_GET_CHIPINFO_IOCTL");
	for (unsigned i = 0; i < info.lines; i++) {
		struct gpio_v2_line_info li;
		memset(&li, 0, sizeof(li));
		li.offset = i;
		if (ioctl(fd, GPIO_V2_GET_LINEINFO_IOCTL, &li) < 0)
			die("GPIO_V2_GET_LINEINFO_IOCTL");
		printf("%s%s", i ? "," : "", li.name);
	}
	printf("\n");
	return 0;
}

static int get(const char *path, unsigned line)
{
	int lfd = request(open_chip(path), line, GPIO_V2_LINE_FLAG_INPUT, 0);
	struct gpio_v2_line_values v = { .mask = 1 };
	if (ioctl(lfd, GPIO_V2_LINE_GET_VALUES_IOCTL, &v) < 0)
		die("GPIO_V2_LINE_GET_VALUES_IOCTL");
	printf("%d\n", (int)(v.bits & 1));
	return 0;
}

static int out(const char *path, unsigned line, int value, long ms)
{
	int lfd = request(open_chip(path), line, GPIO_V2_LINE_FLAG_OUTPUT, value);
	printf("holding\n");
	fflush(stdout);
	usleep(ms * 1000);
	close(lfd);
	return 0;
}

static int edge(const char *path, unsigned line, const char *kind, int count, long ms)
{
	__u64 flags = GPIO_V2_LINE_FLAG_INPUT;
	if (!strcmp(kind, "rising"))
		flags |= GPIO_V2_LINE_FLAG_EDGE_RISING;
	else if (!strcmp(kind, "falling"))
		flags |= GPIO_V2_LINE_FLAG_EDGE_FALLING;
	else if (!strcmp(kind, "both"))
		flags |= GPIO_V2_LINE_FLAG_EDGE_RISING | GPIO_V2_LINE_FLAG_EDGE_FALLING;
	else {
		fprintf(stderr, "gpio-guest: unknown edge %s\n", kind);
		return 2;
	}
	int lfd = request(open_chip(path), line, flags, 0);
	long end = now_ms() + ms;
	printf("armed\n");
	fflush(stdout);
	for (int seen = 0; seen < count;) {
		long left = end - now_ms();
		struct pollfd p = { .fd = lfd, .events = POLLIN };
		if (left <= 0) {
			printf("timeout after %d events\n", seen);
			return 3;
		}
		int n = poll(&p, 1, (int)left);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			die("poll");
		if (n == 0)
			continue;
		struct gpio_v2_line_event ev;
		ssize_t r = read(lfd, &ev, sizeof(ev));
		if (r != (ssize_t)sizeof(ev))
			die("read edge event");
		printf("event %s\n", ev.id == GPIO_V2_LINE_EVENT_RISING_EDGE ? "rising" : "falling");
		fflush(stdout);
		seen++;
	}
	return 0;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc >= 2 && !strcmp(argv[1], "chips"))
		return chips();
	if (argc == 3 && !strcmp(argv[1], "names"))
		return names(argv[2]);
	if (argc == 4 && !strcmp(argv[1], "get"))
		return get(argv[2], atoi(argv[3]));
	if (argc == 6 && !strcmp(argv[1], "out"))
		return out(argv[2], atoi(argv[3]), atoi(argv[4]), atol(argv[5]));
	if (argc == 7 && !strcmp(argv[1], "edge"))
		return edge(argv[2], atoi(argv[3]), argv[4], atoi(argv[5]), atol(argv[6]));
	fprintf(stderr, "usage: gpio-guest chips | names CHIP | get CHIP LINE | "
			"out CHIP LINE VALUE MS | edge CHIP LINE rising|falling|both COUNT MS\n");
	return 2;
}
