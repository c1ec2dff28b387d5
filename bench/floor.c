/*
 * floor: the performance floor of chatd's fan-out (issue 13, item 1).
 *
 * A single-threaded epoll server that speaks just the fan-out subset of
 * chatd's wire protocol (docs/protocol.md, section 4), so that loadgen's
 * chatd client drives it unchanged (`loadgen fanout --target floor`) and
 * bench/compare.sh can say "chatd reaches X% of the floor":
 *
 *   OP_AUTH      accepted without any check; the token's text, read as a
 *                decimal number, is taken as the user id (loadgen's floor
 *                target sends the user id as its token), else user 0
 *   OP_HELLO     answered with OP_HELLO and a fresh client id
 *   OP_JOIN      no membership check: joins, answered with OP_JOIN and
 *                OP_IN_CALL 0
 *   OP_LEAVE     leaves, answered with OP_LEAVE
 *   OP_RTMSG     to 0/0 only: copied to every other connection joined to
 *                the room with the sender's user and client id in place of
 *                the receiver's; other addressing is treated the same
 *   OP_IN_CALL   ignored (no calls)
 *   OP_KEEPALIVE answered with OP_KEEPALIVE
 *
 * What it does not do is the point: no token or membership check, no
 * limits, no rate limiting, no per-message allocation, no shards. Each
 * delivery is memcpy'd into the receiving connection's contiguous output
 * buffer and every connection gets at most one write per event-loop turn,
 * after all reads of the turn (as Redis does before it sleeps). What chatd
 * costs above this is the price of its features and of its architecture.
 *
 * Usage: floor [--port N] (default 0: any free port). Prints
 * "floor listening on 127.0.0.1:PORT" once it accepts; exits 0 on SIGTERM
 * or SIGINT. Build: gcc -O2 -o floor bench/floor.c (bench/compare.sh does).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

enum {
	OP_KEEPALIVE = 0x00,
	OP_JOIN = 0x01,
	OP_LEAVE = 0x02,
	OP_HELLO = 0x03,
	OP_RTMSG = 0x04,
	OP_IN_CALL = 0x05,
	OP_AUTH = 0x06,
};

/* OP_RTMSG header in both directions: opcode chatid(8) userid(8)
 * clientid(4) msgtype(1) msglen(3). */
#define RTMSG_HDR 25
/* Bytes read per connection per turn (Redis reads 16 KiB). */
#define READ_CHUNK (64 * 1024)
#define MAX_EVENTS 1024

struct buf {
	uint8_t *p;
	size_t off, len, cap; /* pending bytes are p[off..len) */
};

struct conn {
	int fd;
	uint64_t user;
	uint32_t client_id;
	int dirty;    /* on the turn's flush list */
	int want_out; /* EPOLLOUT registered: the socket was full */
	int closing;
	struct buf in, out;
	uint64_t *rooms; /* joined, for leaving on close */
	int nrooms, rooms_cap;
};

struct room {
	uint64_t chatid; /* 0: free slot */
	struct conn **m;
	int n, cap;
};

static struct conn **conns; /* by fd */
static int conns_cap;
static struct room *rooms; /* open addressing, power-of-two size */
static size_t rooms_cap, rooms_used;
static struct conn **flush_list;
static int flush_n, flush_cap;
static struct conn **close_list;
static int close_n, close_cap;
static uint32_t next_client_id = 1;
static int ep;
static volatile sig_atomic_t stop;

static void *xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n);
	if (!q) {
		perror("floor: realloc");
		exit(1);
	}
	return q;
}

/* Room for n more bytes at the end of b. */
static uint8_t *buf_reserve(struct buf *b, size_t n)
{
	if (b->len + n > b->cap) {
		if (b->off > 0) {
			memmove(b->p, b->p + b->off, b->len - b->off);
			b->len -= b->off;
			b->off = 0;
		}
		if (b->len + n > b->cap) {
			size_t c = b->cap ? b->cap : 4096;
			while (c < b->len + n)
				c *= 2;
			b->p = xrealloc(b->p, c);
			b->cap = c;
		}
	}
	return b->p + b->len;
}

static void put_u64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_u64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

static void mark_dirty(struct conn *c)
{
	if (c->dirty || c->closing)
		return;
	c->dirty = 1;
	if (flush_n == flush_cap) {
		flush_cap = flush_cap ? flush_cap * 2 : 1024;
		flush_list = xrealloc(flush_list, flush_cap * sizeof *flush_list);
	}
	flush_list[flush_n++] = c;
}

static void send_bytes(struct conn *c, const uint8_t *p, size_t n)
{
	memcpy(buf_reserve(&c->out, n), p, n);
	c->out.len += n;
	mark_dirty(c);
}

static uint64_t hash64(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	return x;
}

/* The room of chatid; created when `create`. NULL when absent. */
static struct room *room_get(uint64_t chatid, int create)
{
	if (create && (rooms_used + 1) * 2 > rooms_cap) {
		size_t old = rooms_cap;
		struct room *o = rooms;
		rooms_cap = old ? old * 2 : 1024;
		rooms = calloc(rooms_cap, sizeof *rooms);
		if (!rooms) {
			perror("floor: calloc");
			exit(1);
		}
		for (size_t i = 0; i < old; i++) {
			if (!o[i].chatid)
				continue;
			size_t j = hash64(o[i].chatid) & (rooms_cap - 1);
			while (rooms[j].chatid)
				j = (j + 1) & (rooms_cap - 1);
			rooms[j] = o[i];
		}
		free(o);
	}
	if (!rooms_cap)
		return NULL;
	size_t j = hash64(chatid) & (rooms_cap - 1);
	while (rooms[j].chatid) {
		if (rooms[j].chatid == chatid)
			return &rooms[j];
		j = (j + 1) & (rooms_cap - 1);
	}
	if (!create)
		return NULL;
	rooms[j].chatid = chatid;
	rooms_used++;
	return &rooms[j];
}

static void room_leave(struct conn *c, uint64_t chatid)
{
	struct room *r = room_get(chatid, 0);
	if (r) {
		for (int i = 0; i < r->n; i++) {
			if (r->m[i] == c) {
				r->m[i] = r->m[--r->n];
				break;
			}
		}
	}
	for (int i = 0; i < c->nrooms; i++) {
		if (c->rooms[i] == chatid) {
			c->rooms[i] = c->rooms[--c->nrooms];
			break;
		}
	}
}

static void room_join(struct conn *c, uint64_t chatid)
{
	for (int i = 0; i < c->nrooms; i++)
		if (c->rooms[i] == chatid)
			return;
	struct room *r = room_get(chatid, 1);
	if (r->n == r->cap) {
		r->cap = r->cap ? r->cap * 2 : 16;
		r->m = xrealloc(r->m, r->cap * sizeof *r->m);
	}
	r->m[r->n++] = c;
	if (c->nrooms == c->rooms_cap) {
		c->rooms_cap = c->rooms_cap ? c->rooms_cap * 2 : 4;
		c->rooms = xrealloc(c->rooms, c->rooms_cap * sizeof *c->rooms);
	}
	c->rooms[c->nrooms++] = chatid;
}

static void close_later(struct conn *c)
{
	if (c->closing)
		return;
	c->closing = 1;
	if (close_n == close_cap) {
		close_cap = close_cap ? close_cap * 2 : 64;
		close_list = xrealloc(close_list, close_cap * sizeof *close_list);
	}
	close_list[close_n++] = c;
}

/* The fan-out: one memcpy of header and data per recipient. */
static void rtmsg(struct conn *c, const uint8_t *cmd, size_t total)
{
	struct room *r = room_get(get_u64(cmd + 1), 0);
	if (!r)
		return;
	for (int i = 0; i < r->n; i++) {
		struct conn *to = r->m[i];
		if (to == c || to->closing)
			continue;
		uint8_t *p = buf_reserve(&to->out, total);
		memcpy(p, cmd, total);
		put_u64(p + 9, c->user);
		p[17] = (uint8_t)c->client_id;
		p[18] = (uint8_t)(c->client_id >> 8);
		p[19] = (uint8_t)(c->client_id >> 16);
		p[20] = (uint8_t)(c->client_id >> 24);
		to->out.len += total;
		mark_dirty(to);
	}
}

/* Handles the complete commands at the start of c->in; returns -1 on a
 * command it does not know (the connection is closed). */
static int parse(struct conn *c)
{
	struct buf *b = &c->in;
	while (b->len > b->off) {
		const uint8_t *p = b->p + b->off;
		size_t n = b->len - b->off, need;
		uint8_t reply[16];
		switch (p[0]) {
		case OP_KEEPALIVE:
			need = 1;
			send_bytes(c, p, 1);
			break;
		case OP_AUTH: {
			if (n < 3)
				return 0;
			size_t tl = p[1] | (size_t)p[2] << 8;
			need = 3 + tl;
			if (n < need)
				return 0;
			uint64_t u = 0;
			for (size_t i = 0; i < tl && p[3 + i] >= '0' && p[3 + i] <= '9'; i++)
				u = u * 10 + (p[3 + i] - '0');
			c->user = u;
			break;
		}
		case OP_HELLO:
			need = 5;
			if (n < need)
				return 0;
			c->client_id = next_client_id++;
			if (!next_client_id)
				next_client_id = 1;
			reply[0] = OP_HELLO;
			for (int i = 0; i < 4; i++)
				reply[1 + i] = (uint8_t)(c->client_id >> (8 * i));
			send_bytes(c, reply, 5);
			break;
		case OP_JOIN:
		case OP_LEAVE:
			need = 9;
			if (n < need)
				return 0;
			if (p[0] == OP_JOIN)
				room_join(c, get_u64(p + 1));
			else
				room_leave(c, get_u64(p + 1));
			send_bytes(c, p, 9);
			if (p[0] == OP_JOIN) {
				memcpy(reply, p, 9);
				reply[0] = OP_IN_CALL;
				reply[9] = 0;
				send_bytes(c, reply, 10);
			}
			break;
		case OP_IN_CALL:
			need = 10;
			if (n < need)
				return 0;
			break;
		case OP_RTMSG:
			if (n < RTMSG_HDR)
				return 0;
			need = RTMSG_HDR + (p[22] | (size_t)p[23] << 8 | (size_t)p[24] << 16);
			if (n < need)
				return 0;
			rtmsg(c, p, need);
			break;
		default:
			return -1;
		}
		b->off += need;
	}
	b->off = b->len = 0;
	return 0;
}

static void set_events(struct conn *c, uint32_t ev)
{
	struct epoll_event e = {.events = ev, .data.fd = c->fd};
	epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e);
}

/* Writes what is pending; registers for EPOLLOUT while the socket is full. */
static void flush(struct conn *c)
{
	struct buf *b = &c->out;
	while (b->len > b->off) {
		ssize_t w = write(c->fd, b->p + b->off, b->len - b->off);
		if (w > 0) {
			b->off += (size_t)w;
			continue;
		}
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			if (!c->want_out) {
				c->want_out = 1;
				set_events(c, EPOLLIN | EPOLLOUT);
			}
			return;
		}
		close_later(c);
		return;
	}
	b->off = b->len = 0;
	if (c->want_out) {
		c->want_out = 0;
		set_events(c, EPOLLIN);
	}
}

static void on_read(struct conn *c)
{
	ssize_t r;
	do {
		r = read(c->fd, buf_reserve(&c->in, READ_CHUNK), READ_CHUNK);
	} while (r < 0 && errno == EINTR);
	if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
		close_later(c);
		return;
	}
	if (r > 0) {
		c->in.len += (size_t)r;
		if (parse(c) < 0)
			close_later(c);
	}
}

static void on_accept(int lfd)
{
	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0)
			return;
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		if (fd >= conns_cap) {
			int old = conns_cap;
			conns_cap = fd * 2 + 64;
			conns = xrealloc(conns, conns_cap * sizeof *conns);
			memset(conns + old, 0, (conns_cap - old) * sizeof *conns);
		}
		struct conn *c = calloc(1, sizeof *c);
		if (!c) {
			close(fd);
			continue;
		}
		c->fd = fd;
		conns[fd] = c;
		struct epoll_event e = {.events = EPOLLIN, .data.fd = fd};
		epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e);
	}
}

static void destroy(struct conn *c)
{
	while (c->nrooms > 0)
		room_leave(c, c->rooms[c->nrooms - 1]);
	epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	conns[c->fd] = NULL;
	free(c->in.p);
	free(c->out.p);
	free(c->rooms);
	free(c);
}

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

int main(int argc, char **argv)
{
	int port = 0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--port") && i + 1 < argc) {
			port = atoi(argv[++i]);
		} else {
			fprintf(stderr, "usage: floor [--port N]\n");
			return 2;
		}
	}
	struct rlimit rl;
	if (!getrlimit(RLIMIT_NOFILE, &rl)) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	signal(SIGPIPE, SIG_IGN);
	struct sigaction sa = {.sa_handler = on_signal};
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);

	int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int one = 1;
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof a) || listen(lfd, 65535)) {
		perror("floor: listen");
		return 1;
	}
	socklen_t al = sizeof a;
	getsockname(lfd, (struct sockaddr *)&a, &al);
	ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event le = {.events = EPOLLIN, .data.fd = lfd};
	epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &le);
	printf("floor listening on 127.0.0.1:%d\n", ntohs(a.sin_port));
	fflush(stdout);

	struct epoll_event evs[MAX_EVENTS];
	while (!stop) {
		int n = epoll_wait(ep, evs, MAX_EVENTS, -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			perror("floor: epoll_wait");
			return 1;
		}
		for (int i = 0; i < n; i++) {
			int fd = evs[i].data.fd;
			if (fd == lfd) {
				on_accept(lfd);
				continue;
			}
			struct conn *c = fd < conns_cap ? conns[fd] : NULL;
			if (!c || c->closing)
				continue;
			if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
				on_read(c);
			if ((evs[i].events & EPOLLOUT) && !c->closing)
				mark_dirty(c);
		}
		/* One write per connection per turn, after every read of it. */
		for (int i = 0; i < flush_n; i++) {
			struct conn *c = flush_list[i];
			c->dirty = 0;
			if (!c->closing)
				flush(c);
		}
		flush_n = 0;
		for (int i = 0; i < close_n; i++)
			destroy(close_list[i]);
		close_n = 0;
	}
	return 0;
}
