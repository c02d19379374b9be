/*
 * snd-guest: play and record through a guest ALSA PCM with the kernel's PCM
 * ioctls (<sound/asound.h>), for the e2e guest, whose busybox has no ALSA
 * tool.  e2e/run builds it with `gcc -O2 -static` and puts it into the
 * initramfs as /usr/bin/snd-guest; e2e/tests/sound.sh uses it and
 * e2e/tools/snd-host.py checks the host side.
 *
 * Every stream is 48 kHz, S16_LE, stereo.  Playback has 4 periods of 20 ms,
 * capture 16 periods of 60 ms.
 *
 * The PCM is opened non-blocking and waited for with poll(), as alsa-lib
 * applications and sound servers do.  A blocking read or write would be
 * bounded by the kernel's own guess, max(1.1 * buffer time, 100 ms) of no
 * period interrupt ("DMA or IRQ trouble?", -EIO); a TCG guest on a busy
 * host is regularly not scheduled for that long, however punctual the
 * device is.  Here each wait is bounded by WAIT_MS instead.
 *
 *   snd-guest play PCM FRAMES
 *       play FRAMES frames of a sine (440 Hz left, 660 Hz right) on the
 *       playback PCM device node PCM, wait until it is played (DRAIN), and
 *       print "played <bytes> bytes crc32 <crc>"; an underrun is recovered
 *       (PREPARE and go on: no sample is lost, as the buffer had run empty)
 *       and counted
 *   snd-guest record PCM FRAMES
 *       record FRAMES frames from the capture PCM device node PCM and print
 *       "recorded <bytes> bytes crc32 <crc>"; an overrun (samples lost: the
 *       guest did not read for the 0.96 s of its buffer) fails with exit
 *       status 4
 *
 *   snd-guest ctl-get CTL NAME INDEX
 *       print "NAME INDEX = VALUE": the first value of the mixer control
 *       element NAME (index INDEX) of the control device node CTL
 *   snd-guest ctl-set CTL NAME INDEX VALUE
 *       write VALUE to it and print as ctl-get
 *   snd-guest ctl-wait CTL NAME INDEX VALUE MS
 *       subscribe to the card's control events, print "subscribed", then
 *       wait up to MS ms for a value-change event of the element after which
 *       it reads VALUE; print "NAME INDEX = VALUE after N events".  The
 *       value is read only when an event came, so this succeeds only if
 *       the change was notified (virtio-snd's CTL_NOTIFY)
 *
 * Exit status: 0 success, 2 usage, 3 an ioctl failed or a wait timed out,
 * 4 an overrun.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include <sound/asound.h>

#define RATE 48000u
#define CHANNELS 2u
#define FRAME_BYTES 4u
/* Playback: 4 periods of 20 ms. */
#define PLAY_PERIOD_FRAMES 960u
#define PLAY_PERIODS 4u
/* Capture: 16 periods of 60 ms (0.96 s; Linux virtio_snd allows up to
 * 16 periods and, for these parameters, 1.28 s of buffer). */
#define REC_PERIOD_FRAMES 2880u
#define REC_PERIODS 16u
/* The longest wait for one period (a stall, not a slow machine). */
#define WAIT_MS 10000

static uint32_t crc_table[256];

static void crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
		crc_table[i] = c;
	}
}

static uint32_t crc32_update(uint32_t crc, const unsigned char *p, size_t n)
{
	crc = ~crc;
	while (n--)
		crc = crc_table[(crc ^ *p++) & 0xFF] ^ (crc >> 8);
	return ~crc;
}

static void die(const char *what)
{
	fprintf(stderr, "snd-guest: %s: %s\n", what, strerror(errno));
	exit(3);
}

static struct snd_mask *mask(struct snd_pcm_hw_params *p, int param)
{
	return &p->masks[param - SNDRV_PCM_HW_PARAM_FIRST_MASK];
}

static struct snd_interval *interval(struct snd_pcm_hw_params *p, int param)
{
	return &p->intervals[param - SNDRV_PCM_HW_PARAM_FIRST_INTERVAL];
}

static void set_mask(struct snd_pcm_hw_params *p, int param, unsigned int bit)
{
	struct snd_mask *m = mask(p, param);
	memset(m, 0, sizeof(*m));
	m->bits[bit >> 5] = 1u << (bit & 31);
}

static void set_interval(struct snd_pcm_hw_params *p, int param, unsigned int v)
{
	struct snd_interval *i = interval(p, param);
	i->min = i->max = v;
	i->openmin = i->openmax = 0;
	i->integer = 1;
	i->empty = 0;
}

/* Wait until the PCM can take (playback) or give (capture) a period, or
 * changed state (an xrun, the end of a drain). */
static void wait_pcm(int fd, short events)
{
	struct pollfd p = { .fd = fd, .events = events };
	int n;

	do
		n = poll(&p, 1, WAIT_MS);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		die("poll");
	if (n == 0) {
		errno = ETIMEDOUT;
		die("no period completed within 10 s");
	}
}

/* Open PCM (non-blocking) and set 48 kHz S16_LE stereo, `periods` periods
 * of `period` frames. */
static int open_pcm(const char *path, int playback, unsigned int period, unsigned int periods)
{
	int fd = open(path, O_RDWR | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		die(path);

	struct snd_pcm_hw_params hw;
	memset(&hw, 0, sizeof(hw));
	for (int i = 0; i <= SNDRV_PCM_HW_PARAM_LAST_MASK - SNDRV_PCM_HW_PARAM_FIRST_MASK; i++)
		memset(&hw.masks[i], 0xFF, sizeof(hw.masks[i]));
	for (int i = 0; i <= SNDRV_PCM_HW_PARAM_LAST_INTERVAL - SNDRV_PCM_HW_PARAM_FIRST_INTERVAL; i++) {
		hw.intervals[i].min = 0;
		hw.intervals[i].max = ~0u;
	}
	hw.rmask = ~0u;
	hw.info = ~0u;
	set_mask(&hw, SNDRV_PCM_HW_PARAM_ACCESS, SNDRV_PCM_ACCESS_RW_INTERLEAVED);
	set_mask(&hw, SNDRV_PCM_HW_PARAM_FORMAT, SNDRV_PCM_FORMAT_S16_LE);
	set_mask(&hw, SNDRV_PCM_HW_PARAM_SUBFORMAT, SNDRV_PCM_SUBFORMAT_STD);
	set_interval(&hw, SNDRV_PCM_HW_PARAM_CHANNELS, CHANNELS);
	set_interval(&hw, SNDRV_PCM_HW_PARAM_RATE, RATE);
	set_interval(&hw, SNDRV_PCM_HW_PARAM_PERIOD_SIZE, period);
	set_interval(&hw, SNDRV_PCM_HW_PARAM_PERIODS, periods);
	if (ioctl(fd, SNDRV_PCM_IOCTL_HW_PARAMS, &hw) < 0)
		die("SNDRV_PCM_IOCTL_HW_PARAMS");

	struct snd_pcm_sw_params sw;
	memset(&sw, 0, sizeof(sw));
	sw.tstamp_mode = SNDRV_PCM_TSTAMP_NONE;
	sw.period_step = 1;
	sw.avail_min = period;
	/* Playback starts once the buffer is full; capture on the first read. */
	sw.start_threshold = playback ? period * periods : 1;
	sw.stop_threshold = period * periods;
	sw.boundary = period * periods;
	while (sw.boundary * 2 <= 0x7FFFFFFFu - period * periods)
		sw.boundary *= 2;
	if (ioctl(fd, SNDRV_PCM_IOCTL_SW_PARAMS, &sw) < 0)
		die("SNDRV_PCM_IOCTL_SW_PARAMS");
	if (ioctl(fd, SNDRV_PCM_IOCTL_PREPARE) < 0)
		die("SNDRV_PCM_IOCTL_PREPARE");
	return fd;
}

/* Sine oscillators: y[n] = k*y[n-1] - y[n-2], k = 2 cos(w). */
struct osc {
	double k, y1, y2, amp;
};

static int16_t osc_next(struct osc *o)
{
	double y = o->k * o->y1 - o->y2;
	o->y2 = o->y1;
	o->y1 = y;
	double s = y * o->amp;
	return (int16_t)(s < 0 ? s - 0.5 : s + 0.5);
}

/* DRAIN without the kernel's blocking wait: start it, then poll until the
 * stream has left DRAINING. */
static void drain(int fd)
{
	if (ioctl(fd, SNDRV_PCM_IOCTL_DRAIN) == 0)
		return;
	if (errno == EPIPE)
		return;
	if (errno != EAGAIN)
		die("SNDRV_PCM_IOCTL_DRAIN");
	for (;;) {
		struct snd_pcm_status st;
		memset(&st, 0, sizeof(st));
		if (ioctl(fd, SNDRV_PCM_IOCTL_STATUS, &st) < 0)
			die("SNDRV_PCM_IOCTL_STATUS");
		if (st.state != SNDRV_PCM_STATE_DRAINING)
			return;
		wait_pcm(fd, POLLOUT);
	}
}

static int play(const char *path, unsigned long frames)
{
	int fd = open_pcm(path, 1, PLAY_PERIOD_FRAMES, PLAY_PERIODS);
	/* sin(w) as y[0], 0 as y[-1]: y[n] = sin((n+1) w). */
	struct osc left = { 1.9966836332280566, 0.057564026959567284, 0.0, 12000.0 };
	struct osc right = { 1.9925407529858825, 0.08628636579792337, 0.0, 8000.0 };
	int16_t buf[PLAY_PERIOD_FRAMES * CHANNELS];
	uint32_t crc = 0;
	unsigned long done = 0, xruns = 0;

	while (done < frames) {
		unsigned long n = frames - done < PLAY_PERIOD_FRAMES ? frames - done : PLAY_PERIOD_FRAMES;
		for (unsigned long i = 0; i < n; i++) {
			buf[2 * i] = osc_next(&left);
			buf[2 * i + 1] = osc_next(&right);
		}
		crc = crc32_update(crc, (unsigned char *)buf, n * FRAME_BYTES);
		unsigned long off = 0;
		while (off < n) {
			struct snd_xferi x = { .buf = buf + 2 * off, .frames = n - off };
			if (ioctl(fd, SNDRV_PCM_IOCTL_WRITEI_FRAMES, &x) < 0) {
				if (errno == EPIPE) {
					xruns++;
					if (ioctl(fd, SNDRV_PCM_IOCTL_PREPARE) < 0)
						die("SNDRV_PCM_IOCTL_PREPARE after an underrun");
					continue;
				}
				if (errno == EAGAIN) {
					wait_pcm(fd, POLLOUT);
					continue;
				}
				if (errno == EINTR)
					continue;
				die("SNDRV_PCM_IOCTL_WRITEI_FRAMES");
			}
			off += (unsigned long)x.result;
		}
		done += n;
	}
	drain(fd);
	close(fd);
	printf("played %lu bytes crc32 %08x underruns %lu\n", done * FRAME_BYTES, crc, xruns);
	return 0;
}

static int record(const char *path, unsigned long frames)
{
	int fd = open_pcm(path, 0, REC_PERIOD_FRAMES, REC_PERIODS);
	static int16_t buf[REC_PERIOD_FRAMES * CHANNELS];
	uint32_t crc = 0;
	unsigned long done = 0;

	while (done < frames) {
		unsigned long want = frames - done < REC_PERIOD_FRAMES ? frames - done : REC_PERIOD_FRAMES;
		struct snd_xferi x = { .buf = buf, .frames = want };
		if (ioctl(fd, SNDRV_PCM_IOCTL_READI_FRAMES, &x) < 0) {
			if (errno == EAGAIN) {
				wait_pcm(fd, POLLIN);
				continue;
			}
			if (errno == EINTR)
				continue;
			if (errno == EPIPE) {
				fprintf(stderr, "snd-guest: overrun after %lu frames: samples were lost\n", done);
				return 4;
			}
			die("SNDRV_PCM_IOCTL_READI_FRAMES");
		}
		crc = crc32_update(crc, (unsigned char *)buf, (size_t)x.result * FRAME_BYTES);
		done += (unsigned long)x.result;
	}
	ioctl(fd, SNDRV_PCM_IOCTL_DROP);
	close(fd);
	printf("recorded %lu bytes crc32 %08x\n", done * FRAME_BYTES, crc);
	return 0;
}

static void ctl_id(struct snd_ctl_elem_id *id, const char *name, unsigned int index)
{
	memset(id, 0, sizeof(*id));
	id->iface = SNDRV_CTL_ELEM_IFACE_MIXER;
	strncpy((char *)id->name, name, sizeof(id->name) - 1);
	id->index = index;
}

static long ctl_get(int fd, const char *name, unsigned int index)
{
	struct snd_ctl_elem_value v;

	memset(&v, 0, sizeof(v));
	ctl_id(&v.id, name, index);
	if (ioctl(fd, SNDRV_CTL_IOCTL_ELEM_READ, &v) < 0)
		die("SNDRV_CTL_IOCTL_ELEM_READ");
	return v.value.integer.value[0];
}

static int ctl_open(const char *path)
{
	int fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		die(path);
	return fd;
}

static int ctl_set(const char *path, const char *name, unsigned int index, long value)
{
	int fd = ctl_open(path);
	struct snd_ctl_elem_value v;

	memset(&v, 0, sizeof(v));
	ctl_id(&v.id, name, index);
	v.value.integer.value[0] = value;
	if (ioctl(fd, SNDRV_CTL_IOCTL_ELEM_WRITE, &v) < 0)
		die("SNDRV_CTL_IOCTL_ELEM_WRITE");
	printf("%s %u = %ld\n", name, index, ctl_get(fd, name, index));
	close(fd);
	return 0;
}

static long long now_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static int ctl_wait(const char *path, const char *name, unsigned int index, long want, int ms)
{
	int fd = ctl_open(path);
	int on = 1;
	unsigned long events = 0;

	if (ioctl(fd, SNDRV_CTL_IOCTL_SUBSCRIBE_EVENTS, &on) < 0)
		die("SNDRV_CTL_IOCTL_SUBSCRIBE_EVENTS");
	printf("subscribed\n");
	/* MS bounds the whole wait, however many other events come. */
	long long deadline = now_ms() + ms;
	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		long long left = deadline - now_ms();
		int n = left > 0 ? poll(&p, 1, (int)left) : 0;
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			die("poll");
		if (n == 0) {
			fprintf(stderr, "snd-guest: no change of %s %u to %ld notified within %d ms "
				"(%lu events; it reads %ld)\n", name, index, want, ms, events,
				ctl_get(fd, name, index));
			exit(3);
		}
		struct snd_ctl_event ev;
		ssize_t r = read(fd, &ev, sizeof(ev));
		if (r < 0 && errno == EINTR)
			continue;
		if (r != (ssize_t)sizeof(ev))
			die("read of a control event");
		if (ev.type != SNDRV_CTL_EVENT_ELEM ||
		    !(ev.data.elem.mask & SNDRV_CTL_EVENT_MASK_VALUE) ||
		    ev.data.elem.mask == SNDRV_CTL_EVENT_MASK_REMOVE ||
		    strcmp((const char *)ev.data.elem.id.name, name) != 0 ||
		    ev.data.elem.id.index != index)
			continue;
		events++;
		long v = ctl_get(fd, name, index);
		if (v == want) {
			printf("%s %u = %ld after %lu events\n", name, index, v, events);
			close(fd);
			return 0;
		}
	}
}

int main(int argc, char **argv)
{
	crc_init();
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc == 4 && strcmp(argv[1], "play") == 0)
		return play(argv[2], strtoul(argv[3], NULL, 0));
	if (argc == 4 && strcmp(argv[1], "record") == 0)
		return record(argv[2], strtoul(argv[3], NULL, 0));
	if (argc == 5 && strcmp(argv[1], "ctl-get") == 0) {
		int fd = ctl_open(argv[2]);
		unsigned int index = (unsigned int)strtoul(argv[4], NULL, 0);
		printf("%s %u = %ld\n", argv[3], index, ctl_get(fd, argv[3], index));
		return 0;
	}
	if (argc == 6 && strcmp(argv[1], "ctl-set") == 0)
		return ctl_set(argv[2], argv[3], (unsigned int)strtoul(argv[4], NULL, 0),
			       strtol(argv[5], NULL, 0));
	if (argc == 7 && strcmp(argv[1], "ctl-wait") == 0)
		return ctl_wait(argv[2], argv[3], (unsigned int)strtoul(argv[4], NULL, 0),
				strtol(argv[5], NULL, 0), (int)strtol(argv[6], NULL, 0));
	fprintf(stderr, "usage: snd-guest play|record PCM FRAMES\n"
		"       snd-guest ctl-get CTL NAME INDEX\n"
		"       snd-guest ctl-set CTL NAME INDEX VALUE\n"
		"       snd-guest ctl-wait CTL NAME INDEX VALUE MS\n");
	return 2;
}
