/*
 * An experiment, not part of aside: an LD_PRELOAD shim that turns Nagle's algorithm off on every TCP
 * socket of the process it is loaded into (and its children), to measure what Spin's missing
 * TCP_NODELAY costs (docs/benchmarks.md, "Spin and Nagle"). `aside-bench --spin-nodelay` builds it with
 * gcc and loads it into the `spin up` processes only.
 *
 * It sets TCP_NODELAY right after connect() (outbound Redis and HTTP) and accept()/accept4()
 * (connections Spin's HTTP trigger accepts), and it turns a later setsockopt(TCP_NODELAY, 0) into
 * setsockopt(TCP_NODELAY, 1): the redis crate (0.32) calls set_nodelay(false) right after it connects,
 * which would otherwise undo the first. Every socket it touches is read back with getsockopt and logged
 * to the file named by NODELAY_SHIM_LOG (if set), one line per socket: what was intercepted, the fd,
 * the peer or local port, and the TCP_NODELAY value the kernel reports afterwards.
 *
 *   gcc -shared -fPIC -O2 -o nodelay.so nodelay.c -ldl
 *   NODELAY_SHIM_LOG=/tmp/nodelay.log LD_PRELOAD=$PWD/nodelay.so spin up ...
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

static int (*real_connect)(int, const struct sockaddr *, socklen_t);
static int (*real_accept)(int, struct sockaddr *, socklen_t *);
static int (*real_accept4)(int, struct sockaddr *, socklen_t *, int);
static int (*real_setsockopt)(int, int, int, const void *, socklen_t);
static pthread_once_t once = PTHREAD_ONCE_INIT;
static int log_fd = -1;

static void init(void) {
    real_connect = dlsym(RTLD_NEXT, "connect");
    real_accept = dlsym(RTLD_NEXT, "accept");
    real_accept4 = dlsym(RTLD_NEXT, "accept4");
    real_setsockopt = dlsym(RTLD_NEXT, "setsockopt");
    const char *path = getenv("NODELAY_SHIM_LOG");
    if (path && *path) {
        log_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    }
}

/* Whether fd is a TCP socket (IPv4 or IPv6 stream). */
static int is_tcp(int fd) {
    int type = 0;
    socklen_t len = sizeof type;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_STREAM) {
        return 0;
    }
    struct sockaddr_storage addr;
    len = sizeof addr;
    if (getsockname(fd, (struct sockaddr *)&addr, &len) != 0) {
        return 0;
    }
    return addr.ss_family == AF_INET || addr.ss_family == AF_INET6;
}

static int port_of(const struct sockaddr_storage *addr) {
    if (addr->ss_family == AF_INET) {
        return ntohs(((const struct sockaddr_in *)addr)->sin_port);
    }
    if (addr->ss_family == AF_INET6) {
        return ntohs(((const struct sockaddr_in6 *)addr)->sin6_port);
    }
    return -1;
}

/* Logs what was done to fd and the TCP_NODELAY value the kernel now reports for it. */
static void report(const char *what, int fd) {
    if (log_fd < 0) {
        return;
    }
    int value = -1;
    socklen_t len = sizeof value;
    getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &value, &len);
    struct sockaddr_storage local, peer;
    socklen_t local_len = sizeof local, peer_len = sizeof peer;
    memset(&local, 0, sizeof local);
    memset(&peer, 0, sizeof peer);
    getsockname(fd, (struct sockaddr *)&local, &local_len);
    getpeername(fd, (struct sockaddr *)&peer, &peer_len);
    char line[160];
    int n = snprintf(line, sizeof line, "pid=%d %s fd=%d local_port=%d peer_port=%d nodelay=%d\n",
                     (int)getpid(), what, fd, port_of(&local), port_of(&peer), value);
    if (n > 0) {
        ssize_t ignored = write(log_fd, line, (size_t)n);
        (void)ignored;
    }
}

static void force(const char *what, int fd) {
    if (fd < 0 || !is_tcp(fd)) {
        return;
    }
    int one = 1;
    real_setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    report(what, fd);
}

int connect(int fd, const struct sockaddr *addr, socklen_t len) {
    pthread_once(&once, init);
    int saved;
    int rc = real_connect(fd, addr, len);
    saved = errno;
    /* Non-blocking connects return EINPROGRESS; the option holds for the socket either way. */
    if (rc == 0 || saved == EINPROGRESS) {
        force("connect", fd);
    }
    errno = saved;
    return rc;
}

int accept(int fd, struct sockaddr *addr, socklen_t *len) {
    pthread_once(&once, init);
    int conn = real_accept(fd, addr, len);
    int saved = errno;
    force("accept", conn);
    errno = saved;
    return conn;
}

int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags) {
    pthread_once(&once, init);
    int conn = real_accept4(fd, addr, len, flags);
    int saved = errno;
    force("accept4", conn);
    errno = saved;
    return conn;
}

int setsockopt(int fd, int level, int name, const void *value, socklen_t len) {
    pthread_once(&once, init);
    if (level == IPPROTO_TCP && name == TCP_NODELAY && value && len >= (socklen_t)sizeof(int) &&
        *(const int *)value == 0) {
        int one = 1;
        int rc = real_setsockopt(fd, level, name, &one, sizeof one);
        int saved = errno;
        report("setsockopt(TCP_NODELAY,0)->1", fd);
        errno = saved;
        return rc;
    }
    return real_setsockopt(fd, level, name, value, len);
}
