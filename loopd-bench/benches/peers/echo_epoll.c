/*
 * The same echo loop both ways, for `cargo bench -p loopd-bench --bench triggering`:
 * `echo_epoll lt` is the classic level-triggered epoll server, `echo_epoll et` the same
 * loop edge-triggered with loopd's rules. Both read into one 64 KiB buffer (loopd's scratch
 * size), set TCP_NODELAY as loopd does, and keep a connection's unwritten tail, reading no
 * more until it is written (backpressure). They differ only where the triggering makes them:
 *
 *   lt: registered for EPOLLIN. One read per event: a short read left the queue empty, and
 *       if it did not, epoll reports the socket again. A short write registers EPOLLOUT
 *       instead of EPOLLIN (EPOLL_CTL_MOD), since a writable socket would be reported on
 *       every epoll_wait; once the tail is written, EPOLLIN again.
 *   et: registered once for EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, never modified. Reads
 *       until a short read or EAGAIN (loopd's rule: a short read emptied the queue, and a
 *       later arrival raises a new edge), remembering a drain cut short by a blocked write.
 *
 *   reply: et, but each read is answered with one fixed HTTP/1.1 response (200, body `ok`)
 *       instead of its echo: the kernel's floor for a keep-alive request, for
 *       `cargo bench -p loopd-bench --bench http`. No parsing at all, so it is right only
 *       for a client that sends one request and waits for its answer (wrk does).
 *
 * It prints `listening on echo=127.0.0.1:PORT` on standard error, as loopd does, and serves
 * until killed. A benchmark peer, not a server: no limits, no timeouts, no accept back-off.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF (64 * 1024)
#define MAX_FDS 65536

struct conn {
    char *tail;       /* bytes the kernel did not take yet (BUF bytes, allocated when needed) */
    size_t off, len;  /* the unwritten part of tail */
    int read_ready;   /* et: the drain was cut short by a blocked write */
};

static struct conn conns[MAX_FDS];
static char buf[BUF];
static int ep, edge, reply;
static const char RESPONSE[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

static void die(const char *what) { perror(what); exit(1); }

static void ctl(int op, int fd, unsigned events) {
    struct epoll_event ev = {.events = events, .data.fd = fd};
    if (epoll_ctl(ep, op, fd, &ev) < 0) die("epoll_ctl");
}

static void drop(int fd) {
    free(conns[fd].tail);
    memset(&conns[fd], 0, sizeof conns[fd]);
    close(fd); /* removes it from the epoll set: nothing else holds the file */
}

/* Writes what is pending; returns 1 when nothing is left, 0 when the socket is full, -1 on
 * an error. */
static int flush(int fd) {
    struct conn *c = &conns[fd];
    while (c->len > 0) {
        ssize_t n = write(fd, c->tail + c->off, c->len);
        if (n < 0) return errno == EAGAIN ? 0 : -1;
        c->off += n;
        c->len -= n;
    }
    return 1;
}

/* Echoes `n` bytes just read (in reply mode, answers them): written now, the tail kept.
 * Returns 1 if all went out. */
static int echo(int fd, size_t n) {
    struct conn *c = &conns[fd];
    const char *data = buf;
    if (reply) {
        data = RESPONSE;
        n = sizeof RESPONSE - 1;
    }
    ssize_t w = write(fd, data, n);
    if (w < 0 && errno != EAGAIN) return -1;
    if (w == (ssize_t)n) return 1;
    if (w < 0) w = 0;
    if (!c->tail && !(c->tail = malloc(BUF))) die("malloc");
    memcpy(c->tail, data + w, n - w);
    c->off = 0;
    c->len = n - w;
    return 0;
}

static void on_lt(int fd, unsigned events) {
    struct conn *c = &conns[fd];
    if (c->len > 0) {
        if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return;
        int r = flush(fd);
        if (r < 0) { drop(fd); return; }
        if (r == 1) ctl(EPOLL_CTL_MOD, fd, EPOLLIN);
        return;
    }
    ssize_t n = read(fd, buf, BUF);
    if (n == 0 || (n < 0 && errno != EAGAIN)) { drop(fd); return; }
    if (n < 0) return;
    int r = echo(fd, n);
    if (r < 0) drop(fd);
    else if (r == 0) ctl(EPOLL_CTL_MOD, fd, EPOLLOUT);
}

static void on_et(int fd, unsigned events) {
    struct conn *c = &conns[fd];
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP)) c->read_ready = 1;
    if (c->len > 0) {
        if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return; /* still full */
        int r = flush(fd);
        if (r < 0) { drop(fd); return; }
        if (r == 0) return; /* the next writable edge */
    }
    int closing = events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR);
    while (c->read_ready) {
        ssize_t n = read(fd, buf, BUF);
        if (n == 0 || (n < 0 && errno != EAGAIN)) { drop(fd); return; }
        if (n < 0) { c->read_ready = 0; return; }
        if (n < BUF && !closing) c->read_ready = 0; /* a short read emptied the queue */
        int r = echo(fd, n);
        if (r < 0) { drop(fd); return; }
        if (r == 0) return; /* read_ready stays as it is until the tail is written */
    }
}

static void on_listener(int lfd) {
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
        if (fd < 0) {
            if (errno == EAGAIN || errno == ECONNABORTED || errno == EINTR) return;
            die("accept4");
        }
        if (fd >= MAX_FDS) { close(fd); continue; }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        ctl(EPOLL_CTL_ADD, fd, edge ? EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET : EPOLLIN);
    }
}

int main(int argc, char **argv) {
    if (argc != 2 || (strcmp(argv[1], "lt") && strcmp(argv[1], "et") && strcmp(argv[1], "reply"))) {
        fprintf(stderr, "usage: %s lt|et|reply\n", argv[0]);
        return 2;
    }
    reply = !strcmp(argv[1], "reply");
    edge = reply || !strcmp(argv[1], "et");
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (lfd < 0) die("socket");
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof addr;
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0) die("bind");
    if (listen(lfd, 1024) < 0) die("listen");
    if (getsockname(lfd, (struct sockaddr *)&addr, &len) < 0) die("getsockname");
    fprintf(stderr, "listening on echo=127.0.0.1:%d\n", ntohs(addr.sin_port));

    if ((ep = epoll_create1(0)) < 0) die("epoll_create1");
    ctl(EPOLL_CTL_ADD, lfd, EPOLLIN);
    struct epoll_event events[1024];
    for (;;) {
        int n = epoll_wait(ep, events, 1024, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd == lfd) on_listener(lfd);
            else if (edge) on_et(fd, events[i].events);
            else on_lt(fd, events[i].events);
        }
    }
}
