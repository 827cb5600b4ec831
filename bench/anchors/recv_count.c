/*
 * The fan-out bench's receivers in C: counts the text frames a server sends on
 * sockets the load generator (bench/fanout.py --worker) opened, signed in and
 * joined, then handed over (inherited fds, their numbers in the file argv[1]).
 *
 * Why: picows' per-frame callback costs the Python load generator ~0.75 us per
 * delivery, so one generator tops out at ~1.2 M deliveries/s, below what the
 * servers can send. Here a read costs one recv and a walk of the (unmasked,
 * RFC 6455 5.2) frame headers in C.
 *
 * stdin, one command per line:
 *   expect K   every socket is to reach K text frames in all (cumulative);
 *              answers "ready" at once, then, when every socket has reached
 *              K, "done <last> <median> <over> <size>": CLOCK_MONOTONIC seconds
 *              (the clock of Python's time.perf_counter on Linux) at which the
 *              last and the median socket reached K, how many sockets had more
 *              than K (a stray frame: the caller fails the round), and the
 *              payload length of the last text frame read
 *   quit       exit
 * A close frame from the server, or a socket that fails, prints "closed <fd>"
 * and the socket is dropped (the caller fails the round).
 *
 *   cc -O2 -o recv_count recv_count.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct sock {
    long got;          /* text frames completed */
    long skip;         /* bytes of the current frame still to come */
    int text;          /* the frame being skipped is a text frame */
    int hl;            /* bytes of a frame header cut by the end of a read */
    unsigned char head[14];
    int done;          /* reached the target */
};

static struct sock *socks; /* by fd */
static int maxfd;
static long target;
static long reached;
static int nsocks;
static double *stamps;
static long last_len; /* payload length of the last text frame seen */

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Walk one read; return the text frames it completed, -1 on a close frame. */
static long walk(struct sock *s, const unsigned char *d, long n) {
    long p = 0, done = 0;
    if (s->skip) {
        if (s->skip > n) {
            s->skip -= n;
            return 0;
        }
        p = s->skip;
        s->skip = 0;
        done += s->text;
    }
    for (;;) {
        unsigned char tmp[28];
        const unsigned char *h;
        long avail;
        if (s->hl) {
            long take = n - p < 14 ? n - p : 14;
            memcpy(tmp, s->head, s->hl);
            memcpy(tmp + s->hl, d + p, take);
            h = tmp;
            avail = s->hl + take;
        } else {
            h = d + p;
            avail = n - p;
        }
        if (avail <= 0 || (s->hl && avail == s->hl))
            return done;
        int op, hlen = 2;
        long len;
        if (avail < 2)
            goto cut;
        op = h[0] & 15;
        len = h[1] & 127;
        if (len == 126) {
            hlen = 4;
            if (avail < 4)
                goto cut;
            len = ((long)h[2] << 8) | h[3];
        } else if (len == 127) {
            hlen = 10;
            if (avail < 10)
                goto cut;
            len = 0;
            for (int i = 2; i < 10; i++)
                len = (len << 8) | h[i];
        }
        long end = p + hlen - s->hl + len;
        s->hl = 0;
        if (op == 1)
            last_len = len;
        if (op == 8)
            return -1;
        if (end > n) {
            s->skip = end - n;
            s->text = op == 1;
            return done;
        }
        done += op == 1;
        p = end;
        continue;
    cut:
        memmove(s->head, h, avail);
        s->hl = (int)avail;
        return done;
    }
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void finish(void) {
    int over = 0;
    for (int fd = 0; fd <= maxfd; fd++)
        if (socks[fd].done && socks[fd].got > target)
            over++;
    qsort(stamps, reached, sizeof(double), cmp);
    printf("done %.9f %.9f %d %ld\n", stamps[reached - 1], stamps[reached / 2], over, last_len);
    fflush(stdout);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: recv_count FDFILE\n");
        return 2;
    }
    FILE *f = fopen(argv[1], "r");
    if (!f) {
        perror(argv[1]);
        return 2;
    }
    int fds[65536], fd;
    while (fscanf(f, "%d", &fd) == 1) {
        if (nsocks == 65536 || fd < 0) {
            fprintf(stderr, "recv_count: more than 65536 sockets, or a bad fd %d\n", fd);
            return 2;
        }
        fds[nsocks++] = fd;
        if (fd > maxfd)
            maxfd = fd;
    }
    fclose(f);
    socks = calloc(maxfd + 1, sizeof *socks);
    stamps = calloc(nsocks + 1, sizeof *stamps);
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN};
    ev.data.fd = 0;
    epoll_ctl(ep, EPOLL_CTL_ADD, 0, &ev);
    for (int i = 0; i < nsocks; i++) {
        ev.data.fd = fds[i];
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev) < 0) {
            perror("epoll_ctl");
            return 2;
        }
    }
    static unsigned char buf[1 << 18];
    static char line[256];
    size_t linelen = 0;
    int alive = nsocks;
    struct epoll_event evs[512];
    for (;;) {
        int k = epoll_wait(ep, evs, 512, -1);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0) {
            perror("epoll_wait");
            return 1;
        }
        for (int i = 0; i < k; i++) {
            int s = evs[i].data.fd;
            if (s == 0) {
                ssize_t r = read(0, line + linelen, sizeof line - 1 - linelen);
                if (r <= 0)
                    return 0;
                linelen += r;
                char *nl;
                while ((nl = memchr(line, '\n', linelen)) != NULL) {
                    *nl = 0;
                    if (strncmp(line, "expect ", 7) == 0) {
                        target = atol(line + 7);
                        reached = 0;
                        for (int j = 0; j <= maxfd; j++)
                            socks[j].done = 0;
                        for (int j = 0; j < nsocks; j++) {
                            struct sock *x = &socks[fds[j]];
                            if (x->got >= target) { /* already there: a stray frame */
                                x->done = 1;
                                stamps[reached++] = now();
                            }
                        }
                        printf("ready\n");
                        fflush(stdout);
                        if (reached == alive && alive > 0)
                            finish();
                    } else if (strcmp(line, "quit") == 0) {
                        return 0;
                    }
                    size_t used = nl - line + 1;
                    memmove(line, nl + 1, linelen - used);
                    linelen -= used;
                }
                continue;
            }
            struct sock *x = &socks[s];
            ssize_t r = recv(s, buf, sizeof buf, MSG_DONTWAIT);
            if (r < 0 && (errno == EAGAIN || errno == EINTR))
                continue;
            long done = r > 0 ? walk(x, buf, r) : -1;
            if (done < 0) {
                epoll_ctl(ep, EPOLL_CTL_DEL, s, NULL);
                alive--;
                printf("closed %d\n", s);
                fflush(stdout);
                continue;
            }
            if (!done)
                continue;
            x->got += done;
            if (!x->done && target && x->got >= target) {
                x->done = 1;
                stamps[reached++] = now();
                if (reached == alive)
                    finish();
            }
        }
    }
}
