/*
 * fanclient: an independent fan-out client, to check loadgen's figures
 * (issue 12: "its figures agree with an independent client within 15%").
 *
 * Same workload as `loadgen fanout --publishers P`, none of its code: C,
 * one epoll loop on one thread, its own parsers, stamp, window accounting,
 * pacing and CPU readings. R rooms; per room P publishers and M receivers;
 * S-byte payloads.
 *
 *   --proto chatd  chatd or bench/floor: AUTH (a token per user from
 *                  --tokens FILE, else the user id in decimal, which is
 *                  what the floor takes), HELLO, JOIN; OP_RTMSG to 0/0.
 *                  Publishers are room members (chatd requires it).
 *   --proto redis  SUBSCRIBE room.N / PUBLISH room.N (publishers are
 *                  connections of their own).
 *   --proto nats   CONNECT (echo off), SUB room.N / PUB room.N.
 *
 * Room r is chat id / channel `room.<id-base + r>`; connection s of room r
 * is user id-base + r * (P + M) + s, publishers first (loadgen's layout).
 *
 * --window W: closed loop, each publisher keeps at most W messages not yet
 * received by every receiver of its room (the saturation search).
 * --rate N:   open loop, N messages/s over all publishers on staggered
 * fixed schedules, woken by a timerfd; latency from the intended time and
 * the send lag (actual - intended) reported apart.
 *
 * Prints one JSON object: deliveries/s, latency percentiles (us), the send
 * lag, this client's CPU (cores) and, with --server-pid, the server's CPU
 * and deliveries per server CPU-second. `errors` counts deliveries out of
 * sequence, misaddressed or unparsable: non-zero means do not trust it.
 *
 * Build: gcc -O2 -o fanclient bench/fanclient.c (bench/compare.sh does).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

enum proto { CHATD, REDIS, NATS };

#define MAGIC 0x434e4146u /* "FANC" */
#define STAMP 24          /* pub(4) magic(4) seq(8) intended_ns(8) */
#define READ_CHUNK (256 * 1024)
#define MAX_BATCH 256 /* messages per write when a paced publisher is late */

struct buf {
	char *p;
	size_t off, len, cap;
};

struct conn {
	int fd;
	int room;
	int pub;   /* global publisher index, -1 for a pure receiver */
	int recv;  /* receives the room's messages */
	int ready; /* setup confirmed */
	struct buf in, out;
	uint64_t *expect; /* next seq per publisher of the room (receivers) */
};

struct pub {
	struct conn *c;
	uint64_t seq;     /* next to send */
	uint64_t base;    /* oldest not yet complete (--window) */
	uint32_t *left;   /* receivers still missing seq % window */
	uint64_t next_ns; /* next due (--rate) */
	double phase_ns;
};

/* Log-linear histogram of microseconds: exact below 1024, then 512
 * sub-buckets per power of two (0.2% precision). */
#define HB 1024
#define HSUB 512
#define HSLOTS (HB + 54 * HSUB)
struct hist {
	uint64_t n[HSLOTS];
	uint64_t count;
};

static void hrec(struct hist *h, uint64_t us)
{
	size_t i;
	if (us < HB) {
		i = us;
	} else {
		int m = 63 - __builtin_clzll(us); /* >= 10 */
		i = HB + (size_t)(m - 10) * HSUB + ((us >> (m - 9)) & (HSUB - 1));
		if (i >= HSLOTS)
			i = HSLOTS - 1;
	}
	h->n[i]++;
	h->count++;
}

static double hq(const struct hist *h, double q)
{
	if (!h->count)
		return -1;
	uint64_t want = (uint64_t)(q * (double)h->count), seen = 0;
	if (want >= h->count)
		want = h->count - 1;
	for (size_t i = 0; i < HSLOTS; i++) {
		seen += h->n[i];
		if (seen > want) {
			if (i < HB)
				return (double)i;
			size_t k = i - HB;
			int m = (int)(k / HSUB) + 10;
			return (double)(((uint64_t)1 << m) | ((uint64_t)(k % HSUB) << (m - 9)));
		}
	}
	return -1;
}

static enum proto proto = CHATD;
static const char *host = "127.0.0.1";
static int port, rooms = 100, members = 10, pubs_per_room = 1, size = 128;
static int window, server_pid, quiet;
static double rate, duration = 5, warmup = 1;
static uint64_t id_base = 1000000;
static const char *tokens_file;

static struct conn *conns;
static int nconns, slots;
static struct pub *pubs;
static int npubs;
static int receivers; /* per message */
static int ep;
static uint64_t t_start, t_measure, t_end;
static uint64_t delivered, sent, errors;
static struct hist lat, lag;

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void die(const char *what)
{
	perror(what);
	exit(1);
}

static char *reserve(struct buf *b, size_t n)
{
	if (b->len + n > b->cap) {
		if (b->off) {
			memmove(b->p, b->p + b->off, b->len - b->off);
			b->len -= b->off;
			b->off = 0;
		}
		if (b->len + n > b->cap) {
			size_t c = b->cap ? b->cap : 8192;
			while (c < b->len + n)
				c *= 2;
			b->p = realloc(b->p, c);
			if (!b->p)
				die("realloc");
			b->cap = c;
		}
	}
	return b->p + b->len;
}

static void append(struct buf *b, const void *p, size_t n)
{
	memcpy(reserve(b, n), p, n);
	b->len += n;
}

static void appendf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void appendf(struct buf *b, const char *fmt, ...)
{
	char tmp[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
	va_end(ap);
	append(b, tmp, (size_t)n);
}

static void put_le(char *p, uint64_t v, int n)
{
	for (int i = 0; i < n; i++)
		p[i] = (char)(v >> (8 * i));
}

static uint64_t get_le(const char *p, int n)
{
	uint64_t v = 0;
	for (int i = n - 1; i >= 0; i--)
		v = (v << 8) | (uint8_t)p[i];
	return v;
}

/* Writes what the socket takes; the rest waits for the next turn. */
static void flush(struct conn *c)
{
	while (c->out.len > c->out.off) {
		ssize_t w = write(c->fd, c->out.p + c->out.off, c->out.len - c->out.off);
		if (w > 0) {
			c->out.off += (size_t)w;
		} else if (w < 0 && errno == EINTR) {
			continue;
		} else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			return;
		} else {
			die("write");
		}
	}
	c->out.off = c->out.len = 0;
}

/* Appends one message of publisher p, intended at t. */
static void publish(struct pub *p, uint64_t t)
{
	struct conn *c = p->c;
	char payload[65536];
	memset(payload, 'x', (size_t)size);
	put_le(payload, (uint64_t)(p - pubs), 4);
	put_le(payload + 4, MAGIC, 4);
	put_le(payload + 8, p->seq, 8);
	put_le(payload + 16, t, 8);
	uint64_t room = id_base + (uint64_t)c->room;
	if (proto == CHATD) {
		char h[25];
		h[0] = 0x04;
		put_le(h + 1, room, 8);
		memset(h + 9, 0, 12); /* receiver 0/0 */
		h[21] = 0;            /* msgtype */
		put_le(h + 22, (uint64_t)size, 3);
		append(&c->out, h, sizeof h);
	} else if (proto == REDIS) {
		char ch[32];
		int n = snprintf(ch, sizeof ch, "room.%llu", (unsigned long long)room);
		appendf(&c->out, "*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n$%d\r\n", n, ch, size);
	} else {
		appendf(&c->out, "PUB room.%llu %d\r\n", (unsigned long long)room, size);
	}
	append(&c->out, payload, (size_t)size);
	if (proto != CHATD)
		append(&c->out, "\r\n", 2);
	if (window)
		p->left[p->seq % (uint64_t)window] = (uint32_t)receivers;
	p->seq++;
	if (t >= t_measure && t < t_end)
		sent++;
}

/* A payload arrived at receiver c at time `at`. */
static void on_payload(struct conn *c, const char *d, size_t n, uint64_t at)
{
	if (n != (size_t)size || n < STAMP || get_le(d + 4, 4) != MAGIC) {
		errors++;
		return;
	}
	uint64_t pi = get_le(d, 4), seq = get_le(d + 8, 8), t = get_le(d + 16, 8);
	if (pi >= (uint64_t)npubs || pubs[pi].c->room != c->room || pubs[pi].c == c) {
		errors++;
		return;
	}
	uint64_t *e = &c->expect[pi % (uint64_t)pubs_per_room];
	if (seq != *e)
		errors++;
	*e = seq + 1;
	if (t >= t_measure && t < t_end) {
		delivered++;
		hrec(&lat, (at - t) / 1000);
	}
	if (window) {
		struct pub *p = &pubs[pi];
		uint32_t *l = &p->left[seq % (uint64_t)window];
		if (*l)
			(*l)--;
		while (p->base < p->seq && p->left[p->base % (uint64_t)window] == 0)
			p->base++;
	}
}

/* Length of a line ending in CRLF at p (without it), or -1 if incomplete. */
static long line_len(const char *p, size_t n)
{
	const char *e = memchr(p, '\n', n);
	if (!e)
		return -1;
	if (e == p || e[-1] != '\r') {
		fprintf(stderr, "fanclient: bare LF from the server\n");
		exit(1);
	}
	return e - p - 1;
}

/* Parses what c received; returns bytes used (0: need more). */
static size_t parse_one(struct conn *c, const char *p, size_t n, uint64_t at)
{
	if (proto == CHATD) {
		static const int fixed[] = {1, 9, 9, 5, 0, 10, 0, 11};
		uint8_t op = (uint8_t)p[0];
		if (op > 7 || op == 6) {
			fprintf(stderr, "fanclient: unknown opcode %u\n", op);
			exit(1);
		}
		size_t need = op == 4 ? 25 : (size_t)fixed[op];
		if (n < need)
			return 0;
		if (op == 4) {
			need += get_le(p + 22, 3);
			if (n < need)
				return 0;
			on_payload(c, p + 25, need - 25, at);
		} else if (op == 7) {
			fprintf(stderr, "fanclient: OP_ERROR code %u for opcode %u\n", (uint8_t)p[1], (uint8_t)p[2]);
			exit(1);
		} else if (op == 5) {
			c->ready = 1; /* OP_IN_CALL ends the answer to OP_JOIN */
		}
		return need;
	}
	if (proto == NATS) {
		long l = line_len(p, n);
		if (l < 0)
			return 0;
		size_t next = (size_t)l + 2;
		if (!strncmp(p, "MSG ", 4)) {
			/* MSG <subject> <sid> [reply] <#bytes>: the length is last */
			const char *s = p + l;
			while (s > p && s[-1] != ' ')
				s--;
			size_t len = strtoul(s, NULL, 10);
			if (n < next + len + 2)
				return 0;
			on_payload(c, p + next, len, at);
			return next + len + 2;
		}
		if (!strncmp(p, "PING", 4))
			append(&c->out, "PONG\r\n", 6);
		else if (!strncmp(p, "PONG", 4))
			c->ready = 1;
		else if (!strncmp(p, "-ERR", 4)) {
			fprintf(stderr, "fanclient: %.*s\n", (int)l, p);
			exit(1);
		}
		return next; /* INFO, +OK */
	}
	/* Redis: integer replies to PUBLISH, +PONG, or an array push. */
	long l = line_len(p, n);
	if (l < 0)
		return 0;
	size_t pos = (size_t)l + 2;
	if (p[0] == ':' || p[0] == '+') {
		if (p[0] == '+')
			c->ready = 1;
		return pos;
	}
	if (p[0] != '*') {
		fprintf(stderr, "fanclient: redis said %.*s\n", (int)l, p);
		exit(1);
	}
	long items = strtol(p + 1, NULL, 10);
	const char *kind = NULL, *data = NULL;
	size_t kind_len = 0, data_len = 0;
	for (long i = 0; i < items; i++) {
		if (pos >= n)
			return 0;
		long hl = line_len(p + pos, n - pos);
		if (hl < 0)
			return 0;
		if (p[pos] == ':') {
			pos += (size_t)hl + 2;
			continue;
		}
		size_t bl = strtoul(p + pos + 1, NULL, 10), start = pos + (size_t)hl + 2;
		if (n < start + bl + 2)
			return 0;
		if (i == 0) {
			kind = p + start;
			kind_len = bl;
		}
		data = p + start;
		data_len = bl;
		pos = start + bl + 2;
	}
	if (kind && kind_len == 7 && !memcmp(kind, "message", 7))
		on_payload(c, data, data_len, at);
	else if (kind && kind_len == 9 && !memcmp(kind, "subscribe", 9))
		c->ready = 1;
	return pos;
}

static void on_read(struct conn *c)
{
	ssize_t r = read(c->fd, reserve(&c->in, READ_CHUNK), READ_CHUNK);
	if (r == 0) {
		fprintf(stderr, "fanclient: the server closed a connection\n");
		exit(1);
	}
	if (r < 0) {
		if (errno == EAGAIN || errno == EINTR)
			return;
		die("read");
	}
	c->in.len += (size_t)r;
	uint64_t at = now_ns(); /* one clock reading per read */
	for (;;) {
		size_t n = c->in.len - c->in.off;
		if (!n)
			break;
		size_t used = parse_one(c, c->in.p + c->in.off, n, at);
		if (!used)
			break;
		c->in.off += used;
	}
	if (c->in.off == c->in.len)
		c->in.off = c->in.len = 0;
	if (c->out.len > c->out.off)
		flush(c); /* PONGs */
}

/* Sends what each publisher may send now; returns the earliest due time
 * of a paced publisher (0: none). */
static uint64_t send_due(uint64_t now)
{
	uint64_t next = 0;
	if (now >= t_end)
		return 0;
	for (int i = 0; i < npubs; i++) {
		struct pub *p = &pubs[i];
		int k = 0;
		if (window) {
			while (p->seq - p->base < (uint64_t)window)
				publish(p, now), k++;
		} else {
			while (p->next_ns <= now && p->next_ns < t_end && k < MAX_BATCH) {
				if (p->next_ns >= t_measure)
					hrec(&lag, (now - p->next_ns) / 1000);
				publish(p, p->next_ns);
				k++;
				p->next_ns = t_start + (uint64_t)(p->phase_ns + (double)p->seq * (1e9 * npubs / rate));
			}
			if (p->next_ns < t_end && (!next || p->next_ns < next))
				next = p->next_ns;
		}
		if (k)
			flush(p->c);
	}
	return next;
}

static double cpu_secs(int pid)
{
	char path[64], s[1024];
	if (pid)
		snprintf(path, sizeof path, "/proc/%d/stat", pid);
	else
		snprintf(path, sizeof path, "/proc/self/stat");
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	size_t n = fread(s, 1, sizeof s - 1, f);
	fclose(f);
	s[n] = 0;
	char *q = strrchr(s, ')');
	unsigned long ut = 0, st = 0;
	if (!q || sscanf(q + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
		return -1;
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static void usage(void)
{
	fprintf(stderr, "usage: fanclient --proto chatd|redis|nats --port N [--host A] [--rooms R] [--members M]\n"
			"  [--publishers P] [--size S] (--window W | --rate MSGS) [--duration S] [--warmup S]\n"
			"  [--id-base N] [--tokens FILE] [--server-pid PID]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"proto", 1, 0, 'P'}, {"host", 1, 0, 'h'}, {"port", 1, 0, 'p'}, {"rooms", 1, 0, 'r'},
		{"members", 1, 0, 'm'}, {"publishers", 1, 0, 'b'}, {"size", 1, 0, 's'}, {"window", 1, 0, 'w'},
		{"rate", 1, 0, 'R'}, {"duration", 1, 0, 'd'}, {"warmup", 1, 0, 'W'}, {"id-base", 1, 0, 'i'},
		{"tokens", 1, 0, 't'}, {"server-pid", 1, 0, 'S'}, {"quiet", 0, 0, 'q'}, {0, 0, 0, 0}};
	int o;
	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (o) {
		case 'P':
			proto = !strcmp(optarg, "redis") ? REDIS : !strcmp(optarg, "nats") ? NATS : CHATD;
			break;
		case 'h': host = optarg; break;
		case 'p': port = atoi(optarg); break;
		case 'r': rooms = atoi(optarg); break;
		case 'm': members = atoi(optarg); break;
		case 'b': pubs_per_room = atoi(optarg); break;
		case 's': size = atoi(optarg); break;
		case 'w': window = atoi(optarg); break;
		case 'R': rate = atof(optarg); break;
		case 'd': duration = atof(optarg); break;
		case 'W': warmup = atof(optarg); break;
		case 'i': id_base = strtoull(optarg, NULL, 10); break;
		case 't': tokens_file = optarg; break;
		case 'S': server_pid = atoi(optarg); break;
		case 'q': quiet = 1; break;
		default: usage();
		}
	}
	if (!port || rooms < 1 || members < 1 || pubs_per_room < 1 || size < STAMP || size > 65536 ||
	    (window > 0) == (rate > 0))
		usage();
	struct rlimit rl;
	if (!getrlimit(RLIMIT_NOFILE, &rl)) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	signal(SIGPIPE, SIG_IGN);
	slots = pubs_per_room + members;
	nconns = rooms * slots;
	npubs = rooms * pubs_per_room;
	receivers = proto == CHATD ? slots - 1 : members;
	conns = calloc((size_t)nconns, sizeof *conns);
	pubs = calloc((size_t)npubs, sizeof *pubs);
	FILE *tf = tokens_file ? fopen(tokens_file, "r") : NULL;
	if (tokens_file && !tf)
		die(tokens_file);
	ep = epoll_create1(0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	inet_pton(AF_INET, host, &a.sin_addr);

	/* Connect and send every connection's setup. */
	for (int i = 0; i < nconns; i++) {
		struct conn *c = &conns[i];
		int r = i / slots, s = i % slots;
		uint64_t room = id_base + (uint64_t)r, user = id_base + (uint64_t)i;
		c->room = r;
		c->pub = s < pubs_per_room ? r * pubs_per_room + s : -1;
		c->recv = proto == CHATD || s >= pubs_per_room;
		c->expect = calloc((size_t)pubs_per_room, sizeof *c->expect);
		if (c->pub >= 0) {
			pubs[c->pub].c = c;
			pubs[c->pub].left = calloc(window ? (size_t)window : 1, sizeof(uint32_t));
		}
		c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&a, sizeof a))
			die("connect");
		int one = 1;
		setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		if (fcntl(c->fd, F_SETFL, O_NONBLOCK))
			die("fcntl");
		struct epoll_event e = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
		epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &e);
		if (proto == CHATD) {
			char tok[8192];
			if (tf) {
				if (!fgets(tok, sizeof tok, tf)) {
					fprintf(stderr, "fanclient: --tokens has fewer than %d lines\n", nconns);
					return 1;
				}
				tok[strcspn(tok, "\r\n")] = 0;
			} else {
				snprintf(tok, sizeof tok, "%llu", (unsigned long long)user);
			}
			size_t tl = strlen(tok);
			char h[16];
			h[0] = 0x06;
			put_le(h + 1, tl, 2);
			append(&c->out, h, 3);
			append(&c->out, tok, tl);
			h[0] = 0x03;
			put_le(h + 1, 1, 2);
			put_le(h + 3, 0, 2);
			append(&c->out, h, 5);
			h[0] = 0x01;
			put_le(h + 1, room, 8);
			append(&c->out, h, 9);
		} else if (proto == REDIS) {
			if (c->recv) {
				char ch[32];
				int n = snprintf(ch, sizeof ch, "room.%llu", (unsigned long long)room);
				appendf(&c->out, "*2\r\n$9\r\nSUBSCRIBE\r\n$%d\r\n%s\r\n", n, ch);
			} else {
				appendf(&c->out, "*1\r\n$4\r\nPING\r\n");
			}
		} else {
			appendf(&c->out, "CONNECT {\"verbose\":false,\"pedantic\":false,\"echo\":false,"
					 "\"name\":\"fanclient\",\"lang\":\"c\",\"version\":\"1\",\"protocol\":1}\r\n");
			if (c->recv)
				appendf(&c->out, "SUB room.%llu 1\r\n", (unsigned long long)room);
			appendf(&c->out, "PING\r\n");
		}
		flush(c);
	}
	if (tf)
		fclose(tf);

	/* Wait until the server confirmed every setup. */
	struct epoll_event evs[1024];
	uint64_t deadline = now_ns() + 30000000000ull;
	for (int ready = 0; ready < nconns;) {
		if (now_ns() > deadline) {
			fprintf(stderr, "fanclient: only %d of %d connections set up\n", ready, nconns);
			return 1;
		}
		int n = epoll_wait(ep, evs, 1024, 100);
		for (int i = 0; i < n; i++) {
			struct conn *c = &conns[evs[i].data.u32];
			int was = c->ready;
			on_read(c);
			ready += !was && c->ready;
		}
	}

	int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	struct epoll_event te = {.events = EPOLLIN, .data.u32 = UINT32_MAX};
	epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &te);
	/* Paced schedules start a little ahead, so the first due times are
	 * not already late; a window starts at once. */
	t_start = now_ns() + (rate > 0 ? 50000000u : 0);
	t_measure = t_start + (uint64_t)(warmup * 1e9);
	t_end = t_measure + (uint64_t)(duration * 1e9);
	for (int i = 0; i < npubs; i++) {
		pubs[i].phase_ns = rate > 0 ? (double)i / npubs * (1e9 * npubs / rate) : 0;
		pubs[i].next_ns = t_start + (uint64_t)pubs[i].phase_ns;
	}
	double c0 = 0, s0 = 0, c1 = 0, s1 = 0;
	int measuring = 0;
	uint64_t armed = 0;
	for (;;) {
		uint64_t now = now_ns();
		if (!measuring && now >= t_measure) {
			measuring = 1;
			c0 = cpu_secs(0);
			s0 = server_pid ? cpu_secs(server_pid) : 0;
		}
		if (now >= t_end) {
			c1 = cpu_secs(0);
			s1 = server_pid ? cpu_secs(server_pid) : 0;
			break;
		}
		uint64_t next = send_due(now);
		/* Paced: the timerfd wakes the loop at the next due time; with a
		 * window, the end of the run must wake it too. */
		uint64_t wake = next ? next : (measuring ? t_end : t_measure);
		if (wake != armed) {
			uint64_t d = wake > now ? wake - now : 1;
			struct itimerspec its = {{0, 0}, {(time_t)(d / 1000000000u), (long)(d % 1000000000u)}};
			timerfd_settime(tfd, 0, &its, NULL);
			armed = wake;
		}
		int n = epoll_wait(ep, evs, 1024, -1);
		for (int i = 0; i < n; i++) {
			if (evs[i].data.u32 == UINT32_MAX) {
				uint64_t x;
				if (read(tfd, &x, sizeof x) > 0)
					armed = 0;
				continue;
			}
			on_read(&conns[evs[i].data.u32]);
		}
	}
	/* Drain: messages sent in the window still count when they arrive
	 * after it (as in loadgen), until the connections go quiet. */
	for (uint64_t quiet_until = now_ns() + 200000000u, stop = now_ns() + 3000000000u;
	     now_ns() < quiet_until && now_ns() < stop;) {
		int n = epoll_wait(ep, evs, 1024, 50);
		for (int i = 0; i < n; i++) {
			if (evs[i].data.u32 == UINT32_MAX) {
				uint64_t x;
				(void)!read(tfd, &x, sizeof x);
				continue;
			}
			on_read(&conns[evs[i].data.u32]);
			quiet_until = now_ns() + 200000000u;
		}
	}
	double secs = duration, ccpu = c1 - c0, scpu = s1 - s0;
	printf("{\"client\":\"fanclient\",\"proto\":\"%s\",\"rooms\":%d,\"members\":%d,\"publishers\":%d,"
	       "\"size\":%d,\"window\":%d,\"rate\":%.0f,\"duration\":%.1f,"
	       "\"sent_per_sec\":%.0f,\"deliveries_per_sec\":%.0f,"
	       "\"latency_us\":{\"p50\":%.0f,\"p90\":%.0f,\"p99\":%.0f,\"p999\":%.0f},"
	       "\"send_lag_us\":{\"p50\":%.0f,\"p99\":%.0f},"
	       "\"client_cores\":%.3f,\"server_cores\":%.3f,\"deliveries_per_server_cpu_sec\":%.0f,"
	       "\"errors\":%llu}\n",
	       proto == CHATD ? "chatd" : proto == REDIS ? "redis" : "nats", rooms, members, pubs_per_room, size,
	       window, rate, duration, (double)sent / secs, (double)delivered / secs, hq(&lat, 0.5),
	       hq(&lat, 0.9), hq(&lat, 0.99), hq(&lat, 0.999), hq(&lag, 0.5), hq(&lag, 0.99), ccpu / secs,
	       server_pid ? scpu / secs : -1, server_pid && scpu > 0 ? (double)delivered / scpu : -1,
	       (unsigned long long)errors);
	return errors ? 3 : 0;
}
