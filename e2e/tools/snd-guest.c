/*
 * snd-guest: play and record through a guest ALSA PCM with the kernel's PCM
 * ioctls (<sound/asound.h>), for the e2e guest, whose busybox has no ALSA
 * tool.  e2e/run builds it with `gcc -O2 -static` and puts it into the
 * initramfs as /usr/bin/snd-guest; e2e/tests/sound.sh uses it and
 * e2e/tools/snd-host.py checks the host side.
 *
 * Every stream is 48 kHz, S16_LE, stereo, 20 ms periods, 4 of them.
 *
 *   snd-guest play PCM FRAMES
 *       play FRAMES frames of a sine (440 Hz left, 660 Hz right) on the
 *       playback PCM device node PCM, wait until it is played (DRAIN), and
 *       print "played <bytes> bytes crc32 <crc>"; an underrun is recovered
 *       (PREPARE and go on: no sample is lost, as the buffer had run empty)
 *       and counted
 *   snd-guest record PCM FRAMES
 *       record FRAMES frames from the capture PCM device node PCM and print
 *       "recorded <bytes> bytes crc32 <crc>"; an overrun (samples lost)
 *       fails with exit status 4
 *
 * Exit status: 0 success, 2 usage, 3 an ioctl failed, 4 an overrun.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <sound/asound.h>

#define RATE 48000u
#define CHANNELS 2u
#define PERIOD_FRAMES 960u
#define PERIODS 4u
#define FRAME_BYTES 4u

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

/* Open PCM and set 48 kHz S16_LE stereo, 4 periods of 20 ms. */
static int open_pcm(const char *path, int playback)
{
	int fd = open(path, O_RDWR | O_CLOEXEC);
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
	set_interval(&hw, SNDRV_PCM_HW_PARAM_PERIOD_SIZE, PERIOD_FRAMES);
	set_interval(&hw, SNDRV_PCM_HW_PARAM_PERIODS, PERIODS);
	if (ioctl(fd, SNDRV_PCM_IOCTL_HW_PARAMS, &hw) < 0)
		die("SNDRV_PCM_IOCTL_HW_PARAMS");

	struct snd_pcm_sw_params sw;
	memset(&sw, 0, sizeof(sw));
	sw.tstamp_mode = SNDRV_PCM_TSTAMP_NONE;
	sw.period_step = 1;
	sw.avail_min = PERIOD_FRAMES;
	/* Playback starts once the buffer is full; capture on the first read. */
	sw.start_threshold = playback ? PERIOD_FRAMES * PERIODS : 1;
	sw.stop_threshold = PERIOD_FRAMES * PERIODS;
	sw.boundary = PERIOD_FRAMES * PERIODS;
	while (sw.boundary * 2 <= 0x7FFFFFFFu - PERIOD_FRAMES * PERIODS)
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

static int play(const char *path, unsigned long frames)
{
	int fd = open_pcm(path, 1);
	/* sin(w) as y[0], 0 as y[-1]: y[n] = sin((n+1) w). */
	struct osc left = { 1.9966836332280566, 0.057564026959567284, 0.0, 12000.0 };
	struct osc right = { 1.9925407529858825, 0.08628636579792337, 0.0, 8000.0 };
	int16_t buf[PERIOD_FRAMES * CHANNELS];
	uint32_t crc = 0;
	unsigned long done = 0, xruns = 0;

	while (done < frames) {
		unsigned long n = frames - done < PERIOD_FRAMES ? frames - done : PERIOD_FRAMES;
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
				if (errno == EINTR || errno == EAGAIN)
					continue;
				die("SNDRV_PCM_IOCTL_WRITEI_FRAMES");
			}
			off += (unsigned long)x.result;
		}
		done += n;
	}
	if (ioctl(fd, SNDRV_PCM_IOCTL_DRAIN) < 0 && errno != EPIPE)
		die("SNDRV_PCM_IOCTL_DRAIN");
	close(fd);
	printf("played %lu bytes crc32 %08x underruns %lu\n", done * FRAME_BYTES, crc, xruns);
	return 0;
}

static int record(const char *path, unsigned long frames)
{
	int fd = open_pcm(path, 0);
	int16_t buf[PERIOD_FRAMES * CHANNELS];
	uint32_t crc = 0;
	unsigned long done = 0;

	while (done < frames) {
		unsigned long want = frames - done < PERIOD_FRAMES ? frames - done : PERIOD_FRAMES;
		struct snd_xferi x = { .buf = buf, .frames = want };
		if (ioctl(fd, SNDRV_PCM_IOCTL_READI_FRAMES, &x) < 0) {
			if (errno == EINTR || errno == EAGAIN)
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

int main(int argc, char **argv)
{
	crc_init();
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc == 4 && strcmp(argv[1], "play") == 0)
		return play(argv[2], strtoul(argv[3], NULL, 0));
	if (argc == 4 && strcmp(argv[1], "record") == 0)
		return record(argv[2], strtoul(argv[3], NULL, 0));
	fprintf(stderr, "usage: snd-guest play|record PCM FRAMES\n");
	return 2;
}
