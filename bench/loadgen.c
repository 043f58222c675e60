/*
 * loadgen: a load generator for jctotpd's PAM socket (docs/protocol.md).
 *
 * Why C: the Python asyncio client of bench/verify_rate.py costs ~330 us of
 * CPU per login, so on a 2-core machine at 3,000 logins/s it takes most of a
 * core from the daemon it measures. This one is a single epoll thread.
 *
 * One login is what the shim does with `factors=totp`: connect (AF_UNIX,
 * non-blocking), send HELLO, read one frame that must be `PROMPT_OFF ...`,
 * send `ANSWER <code>`, read the `VERDICT <code>` frame, close.
 *
 *   closed loop: --connections N slots, each starts its next login when its
 *                verdict arrives; verdicts that arrive inside the measured
 *                window [start + warmup, start + warmup + seconds) count,
 *                each with its latency from connect to verdict.
 *   open loop:   --rate R: login k is scheduled at start + k / R (for those
 *                before the window's end), at most --connections in flight;
 *                one that would exceed the cap is not started (`shed`).
 *                Latency runs from the SCHEDULED start to the verdict, and the
 *                logins scheduled inside the window count.
 *
 * Users and codes come from --users FILE (or - for stdin), written by Python:
 *   line 1:  <unix time column 1 begins> <step seconds>
 *   then:    <user> <code for column 0> <code for column 1> ...
 * Column 0 is the code before the header's time; column c >= 1 from
 * time + (c - 1) * step on (the last column is kept past its step). The code
 * is picked by wall clock when the login starts. Users and socket paths
 * (--socket, repeatable) are taken round-robin, one login after another.
 *
 * Output: one JSON object on stdout (see print_report). Failures are counted
 * by kind ("error connect EAGAIN", "error closed early", "error malformed
 * frame", "error timeout", "unexpected TAG" ...), never fatal.
 *
 *   cc -std=c99 -O2 -Wall -Wextra -Werror -o loadgen bench/loadgen.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <math.h>   /* isfinite: a macro, no libm */
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_FRAME 16384          /* docs/protocol.md */
#define MAX_NAME 200
#define MAX_CODE 16
#define MAX_KEYS 64              /* distinct outcome kinds kept; the rest are "other" */
#define KEY_LEN 48
#define NS 1000000000LL
#define TIMER_TAG UINT32_MAX     /* epoll data of the timerfd */

struct user {
    char name[MAX_NAME + 1];
    char (*codes)[MAX_CODE + 1];
    size_t ncodes;
};

enum state { FREE, CONNECTING, WANT_PROMPT, WANT_VERDICT };

struct conn {
    int fd;
    enum state state;
    int64_t origin;               /* ns: latency is measured from here */
    int64_t deadline;             /* ns: the login fails with "timeout" after it */
    const char *code;
    char out[MAX_NAME + 128];
    size_t out_len, out_off;
    unsigned char in[4 + MAX_FRAME];
    size_t in_len;
    int want_out;                 /* EPOLLOUT registered */
};

struct tally {
    char key[MAX_KEYS][KEY_LEN];
    uint64_t count[MAX_KEYS];
    size_t n;
};

struct latencies {
    int64_t *ns;
    size_t n, cap;
};

static struct {
    /* options */
    const char **paths;
    size_t npaths;
    struct user *users;
    size_t nusers;
    double code_t1, code_step;    /* wall clock: column 1 begins, step seconds */
    size_t cap;                   /* --connections */
    double rate;                  /* > 0: open loop */
    int64_t start, count_from, stop_at, timeout;
    /* run */
    int epfd, tfd;
    struct conn *conns;
    size_t *free_slots, nfree;
    size_t in_flight;
    uint64_t next_login;          /* round-robin over users and paths */
    uint64_t next_k, total_k;     /* open loop: the schedule */
    int64_t armed;                /* the timerfd's current deadline, 0 = none */
    /* results */
    struct tally window, outside;
    struct latencies lat;
    uint64_t done_in_window;      /* SUCCESS/AUTH_ERR whose verdict came inside the window */
    int window_open, window_closed;
    double cpu0, cpu1;
    int64_t wall0, wall1;
} G;

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * NS + ts.tv_nsec;
}

/* Seconds (>= 0) to nanoseconds, rounded; without libm. */
static int64_t ns_of(double seconds)
{
    return (int64_t)(seconds * 1e9 + 0.5);
}

static double wall_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void die(const char *what)
{
    fprintf(stderr, "loadgen: %s\n", what);
    exit(2);
}

static const char *errno_name(int e)
{
    switch (e) {
    case EAGAIN: return "EAGAIN";
    case ECONNREFUSED: return "ECONNREFUSED";
    case ECONNRESET: return "ECONNRESET";
    case ENOENT: return "ENOENT";
    case EACCES: return "EACCES";
    case EPIPE: return "EPIPE";
    case EMFILE: return "EMFILE";
    case ENFILE: return "ENFILE";
    case ENOTSOCK: return "ENOTSOCK";
    case ENAMETOOLONG: return "ENAMETOOLONG";
    default: return NULL;
    }
}

/* ---- results ------------------------------------------------------------ */

/* Keys are printed into JSON: keep printable ASCII without quotes or backslashes. */
static void tally_add(struct tally *t, const char *raw)
{
    char key[KEY_LEN];
    size_t i;
    for (i = 0; raw[i] && i < KEY_LEN - 1; i++) {
        unsigned char c = (unsigned char)raw[i];
        key[i] = (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') ? (char)c : '?';
    }
    key[i] = '\0';
    for (i = 0; i < t->n; i++)
        if (strcmp(t->key[i], key) == 0) {
            t->count[i]++;
            return;
        }
    if (t->n == MAX_KEYS) {
        tally_add(t, "other");   /* "other" is always found or added below the cap */
        return;
    }
    if (t->n == MAX_KEYS - 1 && strcmp(key, "other") != 0) {
        strcpy(key, "other");
        for (i = 0; i < t->n; i++)
            if (strcmp(t->key[i], key) == 0) {
                t->count[i]++;
                return;
            }
    }
    memcpy(t->key[t->n], key, KEY_LEN);
    t->count[t->n++] = 1;
}

static void latency_add(int64_t ns)
{
    if (G.lat.n == G.lat.cap) {
        G.lat.cap = G.lat.cap ? G.lat.cap * 2 : 65536;
        G.lat.ns = realloc(G.lat.ns, G.lat.cap * sizeof *G.lat.ns);
        if (!G.lat.ns)
            die("out of memory");
    }
    G.lat.ns[G.lat.n++] = ns;
}

static int is_verification(const char *key)
{
    return strcmp(key, "SUCCESS") == 0 || strcmp(key, "AUTH_ERR") == 0;
}

/* One login's outcome. `origin` is its latency origin, `done` its end (ns);
 * `counted` says whether the login belongs to the measured window. */
static void record(const char *key, int64_t origin, int64_t done, int counted)
{
    if (is_verification(key) && done >= G.count_from && done < G.stop_at)
        G.done_in_window++;
    if (!counted) {
        tally_add(&G.outside, key);
        return;
    }
    tally_add(&G.window, key);
    if (strcmp(key, "shed") != 0)
        latency_add(done - origin);
}

static void print_tally(const char *name, const struct tally *t)
{
    printf("\"%s\":{", name);
    for (size_t i = 0; i < t->n; i++)
        printf("%s\"%s\":%" PRIu64, i ? "," : "", t->key[i], t->count[i]);
    printf("}");
}

static void print_report(void)
{
    printf("{\"client\":\"c\",\"loop\":\"%s\",", G.rate > 0 ? "open" : "closed");
    print_tally("verdicts", &G.window);
    printf(",");
    print_tally("outside", &G.outside);
    printf(",\"done_in_window\":%" PRIu64 ",\"client_cpu_s\":%.6f,\"wall_s\":%.6f,",
           G.done_in_window, G.cpu1 - G.cpu0, (double)(G.wall1 - G.wall0) / 1e9);
    printf("\"latencies_us\":[");
    for (size_t i = 0; i < G.lat.n; i++)
        printf("%s%" PRId64 ".%03" PRId64, i ? "," : "", G.lat.ns[i] / 1000,
               G.lat.ns[i] % 1000);
    printf("]}\n");
}

/* ---- one login ------------------------------------------------------------ */

static int counted_at(int64_t origin, int64_t done)
{
    if (G.rate > 0)   /* open loop: the logins scheduled inside the window */
        return origin >= G.count_from && origin < G.stop_at;
    return done >= G.count_from && done < G.stop_at;   /* closed: verdicts inside it */
}

static void finish(size_t slot, const char *key)
{
    struct conn *c = &G.conns[slot];
    int64_t done = mono_ns();
    if (c->fd >= 0)
        close(c->fd);   /* also leaves the epoll set */
    c->fd = -1;
    c->state = FREE;
    explicit_bzero(c->out, sizeof c->out);
    G.in_flight--;
    G.free_slots[G.nfree++] = slot;
    /* a closed loop's login whose verdict comes after the window is dropped, as
       verify_rate.connection does; it only kept its slot busy until the end */
    if (G.rate > 0 || done < G.stop_at)
        record(key, c->origin, done, counted_at(c->origin, done));
    else
        tally_add(&G.outside, key);
}

static void fail_errno(size_t slot, const char *where, int e)
{
    char key[KEY_LEN];
    const char *name = errno_name(e);
    if (name)
        snprintf(key, sizeof key, "error %s %s", where, name);
    else
        snprintf(key, sizeof key, "error %s errno %d", where, e);
    finish(slot, key);
}

static int watch(size_t slot, int op)
{
    struct conn *c = &G.conns[slot];
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = EPOLLIN | (c->want_out ? EPOLLOUT : 0u);
    ev.data.u32 = (uint32_t)slot;
    return epoll_ctl(G.epfd, op, c->fd, &ev);
}

/* Write what is queued; 0 when all went, 1 when waiting for EPOLLOUT, -1 when
 * the login failed (finished). */
static int flush(size_t slot)
{
    struct conn *c = &G.conns[slot];
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!c->want_out) {
                c->want_out = 1;
                watch(slot, EPOLL_CTL_MOD);
            }
            return 1;
        }
        if (n < 0) {
            fail_errno(slot, "write", errno);
            return -1;
        }
        c->out_off += (size_t)n;
    }
    if (c->want_out) {
        c->want_out = 0;
        watch(slot, EPOLL_CTL_MOD);
    }
    return 0;
}

static void queue_frame(struct conn *c, const char *payload, size_t len)
{
    c->out[0] = (char)(len >> 24);
    c->out[1] = (char)(len >> 16);
    c->out[2] = (char)(len >> 8);
    c->out[3] = (char)len;
    memcpy(c->out + 4, payload, len);
    c->out_len = len + 4;
    c->out_off = 0;
}

static const char *code_now(const struct user *u)
{
    double now = wall_s();
    size_t col = 0;
    if (now >= G.code_t1) {
        double steps = (now - G.code_t1) / G.code_step;   /* >= 0: truncation is floor */
        col = steps + 1 >= (double)u->ncodes ? u->ncodes - 1 : (size_t)steps + 1;
    }
    return u->codes[col];
}

static void start_login(int64_t origin)
{
    size_t slot = G.free_slots[--G.nfree];
    struct conn *c = &G.conns[slot];
    const struct user *u = &G.users[G.next_login % G.nusers];
    const char *path = G.paths[G.next_login % G.npaths];
    struct sockaddr_un sa;
    char hello[sizeof c->out];
    int n;

    G.next_login++;
    G.in_flight++;
    memset(c, 0, offsetof(struct conn, in));
    c->in_len = 0;
    c->origin = origin;
    c->deadline = mono_ns() + G.timeout;
    c->code = code_now(u);
    c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        fail_errno(slot, "socket", errno);
        return;
    }
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, path, strlen(path) + 1);   /* length checked in main */
    n = snprintf(hello, sizeof hello, "HELLO JCTOTP/1\ncall=auth\nservice=bench\nuser=%s\n"
                 "rhost=\ntty=\nfactors=totp\n", u->name);
    queue_frame(c, hello, (size_t)n);
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) == 0) {
        c->state = WANT_PROMPT;
    } else if (errno == EINPROGRESS) {   /* not on Linux AF_UNIX, but allowed */
        c->state = CONNECTING;
        c->want_out = 1;
    } else {
        fail_errno(slot, "connect", errno);
        return;
    }
    if (watch(slot, EPOLL_CTL_ADD) < 0) {
        fail_errno(slot, "epoll", errno);
        return;
    }
    if (c->state == WANT_PROMPT)
        flush(slot);
}

/* The frame's tag for an "unexpected" key: its first word, at most 20 bytes. */
static void unexpected(size_t slot, const unsigned char *payload, size_t len)
{
    char key[KEY_LEN] = "unexpected ";
    size_t at = strlen(key);
    for (size_t i = 0; i < len && i < 20 && payload[i] != ' ' && payload[i] != '\n'; i++)
        key[at++] = (char)payload[i];   /* tally_add makes it printable */
    key[at] = '\0';
    finish(slot, key);
}

static void on_frame(size_t slot, const unsigned char *payload, size_t len)
{
    struct conn *c = &G.conns[slot];
    if (c->state == WANT_PROMPT) {
        char answer[8 + MAX_CODE];
        if (len < 11 || memcmp(payload, "PROMPT_OFF ", 11) != 0) {
            unexpected(slot, payload, len);
            return;
        }
        int n = snprintf(answer, sizeof answer, "ANSWER %s", c->code);
        queue_frame(c, answer, (size_t)n);
        explicit_bzero(answer, sizeof answer);
        c->state = WANT_VERDICT;
        flush(slot);
        return;
    }
    if (len < 8 || memcmp(payload, "VERDICT ", 8) != 0) {
        unexpected(slot, payload, len);
        return;
    }
    char key[KEY_LEN];
    size_t n = len - 8 < KEY_LEN - 1 ? len - 8 : KEY_LEN - 1;
    memcpy(key, payload + 8, n);
    key[n] = '\0';
    if (memchr(payload + 8, '\0', len - 8))
        strcpy(key, "unexpected VERDICT");   /* a NUL inside would cut the key short */
    finish(slot, key);
}

static void on_readable(size_t slot)
{
    struct conn *c = &G.conns[slot];
    for (;;) {
        ssize_t n = read(c->fd, c->in + c->in_len, sizeof c->in - c->in_len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n < 0) {
            fail_errno(slot, "read", errno);
            return;
        }
        if (n == 0) {
            finish(slot, "error closed early");
            return;
        }
        c->in_len += (size_t)n;
        while (c->in_len >= 4) {
            size_t len = (size_t)c->in[0] << 24 | (size_t)c->in[1] << 16 |
                         (size_t)c->in[2] << 8 | (size_t)c->in[3];
            if (len == 0 || len > MAX_FRAME) {
                finish(slot, "error malformed frame");
                return;
            }
            if (c->in_len < 4 + len)
                break;
            enum state before = c->state;
            on_frame(slot, c->in + 4, len);
            if (c->state == FREE || c->state == before)
                return;   /* finished (the slot may be reused by now) */
            memmove(c->in, c->in + 4 + len, c->in_len - 4 - len);
            c->in_len -= 4 + len;
        }
    }
}

static void on_event(size_t slot, uint32_t events)
{
    struct conn *c = &G.conns[slot];
    if (c->state == FREE)
        return;
    if (c->state == CONNECTING && (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            fail_errno(slot, "connect", err);
            return;
        }
        c->state = WANT_PROMPT;
    }
    if ((events & EPOLLOUT) && flush(slot) < 0)
        return;
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP))
        on_readable(slot);
}

/* ---- the loop --------------------------------------------------------------- */

static int64_t scheduled(uint64_t k)
{
    return G.start + ns_of((double)k / G.rate);
}

static void arm(int64_t deadline)
{
    if (deadline == G.armed)
        return;
    struct itimerspec its;
    memset(&its, 0, sizeof its);
    its.it_value.tv_sec = deadline / NS;
    its.it_value.tv_nsec = deadline % NS;
    if (timerfd_settime(G.tfd, TFD_TIMER_ABSTIME, &its, NULL) < 0)
        die("timerfd_settime failed");
    G.armed = deadline;
}

static void sample_window(int64_t now)
{
    if (!G.window_open && now >= G.count_from) {
        G.window_open = 1;
        G.cpu0 = cpu_s();
        G.wall0 = now;
    }
    if (G.window_open && !G.window_closed && now >= G.stop_at) {
        G.window_closed = 1;
        G.cpu1 = cpu_s();
        G.wall1 = now;
    }
}

static void run(void)
{
    struct epoll_event events[256];
    for (;;) {
        int64_t now = mono_ns();
        int64_t next = INT64_MAX;
        int spin = 0;

        sample_window(now);
        for (size_t i = 0; i < G.cap; i++)
            if (G.conns[i].state != FREE && G.conns[i].deadline <= now)
                finish(i, "error timeout");
        if (G.rate > 0) {
            for (; G.next_k < G.total_k && scheduled(G.next_k) <= now; G.next_k++) {
                if (G.nfree == 0)
                    record("shed", scheduled(G.next_k), now,
                           counted_at(scheduled(G.next_k), now));
                else
                    start_login(scheduled(G.next_k));
            }
            if (G.next_k < G.total_k)
                next = scheduled(G.next_k);
            else if (G.in_flight == 0 && G.window_closed)
                break;   /* (the window's CPU and wall time run to its end) */
        } else if (now >= G.start && now < G.stop_at) {
            /* one attempt per free slot per turn: a login that fails at once
               (nobody listening) frees its slot again without a busy loop here */
            for (size_t n = G.nfree; n > 0 && G.nfree > 0; n--)
                start_login(mono_ns());   /* a closed loop times from the connect */
            spin = G.nfree > 0;
        } else if (now < G.start) {
            next = G.start;
        } else if (G.in_flight == 0 && G.window_closed) {
            break;
        }
        if (!G.window_open && G.count_from < next)
            next = G.count_from;
        if (!G.window_closed && G.stop_at < next)
            next = G.stop_at;
        for (size_t i = 0; i < G.cap; i++)
            if (G.conns[i].state != FREE && G.conns[i].deadline < next)
                next = G.conns[i].deadline;
        if (next <= mono_ns())
            spin = 1;
        else if (next != INT64_MAX)
            arm(next);

        int n = epoll_wait(G.epfd, events, 256, spin ? 0 : -1);
        if (n < 0 && errno != EINTR)
            die("epoll_wait failed");
        for (int i = 0; i < n; i++) {
            if (events[i].data.u32 == TIMER_TAG) {
                uint64_t expirations;
                if (read(G.tfd, &expirations, sizeof expirations) < 0 && errno != EAGAIN)
                    die("timerfd read failed");
                G.armed = 0;
                continue;
            }
            on_event(events[i].data.u32, events[i].events);
        }
    }
}

/* ---- setup ------------------------------------------------------------------ */

static void read_users(const char *file)
{
    FILE *fh = strcmp(file, "-") == 0 ? stdin : fopen(file, "r");
    char *line = NULL;
    size_t size = 0, cap = 0;
    if (!fh)
        die("cannot open the users file");
    if (getline(&line, &size, fh) < 0 ||
        sscanf(line, "%lf %lf", &G.code_t1, &G.code_step) != 2 || !(G.code_step > 0))
        die("users file: the first line must be '<unix time> <step seconds>'");
    while (getline(&line, &size, fh) >= 0) {
        char *save = NULL, *name = strtok_r(line, " \t\r\n", &save);
        if (!name)
            continue;
        if (G.nusers == cap) {
            cap = cap ? cap * 2 : 256;
            G.users = realloc(G.users, cap * sizeof *G.users);
            if (!G.users)
                die("out of memory");
        }
        struct user *u = &G.users[G.nusers];
        memset(u, 0, sizeof *u);
        if (strlen(name) > MAX_NAME)
            die("users file: a user name is too long");
        strcpy(u->name, name);
        for (char *code; (code = strtok_r(NULL, " \t\r\n", &save)) != NULL;) {
            if (strlen(code) > MAX_CODE)
                die("users file: a code is too long");
            u->codes = realloc(u->codes, (u->ncodes + 1) * sizeof *u->codes);
            if (!u->codes)
                die("out of memory");
            strcpy(u->codes[u->ncodes++], code);
        }
        if (u->ncodes == 0)
            die("users file: a user without a code");
        G.nusers++;
    }
    explicit_bzero(line, size);
    free(line);
    if (fh != stdin)
        fclose(fh);
    if (G.nusers == 0)
        die("users file: no users");
}

static double number(const char *opt, const char *text, double min)
{
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (errno || end == text || *end || !(v >= min) || !isfinite(v)) {
        fprintf(stderr, "loadgen: %s: not a number >= %g: '%s'\n", opt, min, text);
        exit(2);
    }
    return v;
}

static void usage(void)
{
    fputs("usage: loadgen --socket PATH [--socket PATH ...] --users FILE|-\n"
          "               [--connections N] [--seconds S] [--warmup W] [--rate R]\n"
          "               [--start-at MONOTONIC_SECONDS] [--timeout S]\n", stderr);
    exit(2);
}

int main(int argc, char **argv)
{
    const char *users = NULL;
    double seconds = 5, warmup = 1, timeout = 10, start_at = -1, conns = 50;

    G.paths = calloc((size_t)argc, sizeof *G.paths);
    if (!G.paths)
        die("out of memory");
    for (int i = 1; i < argc; i++) {
        const char *opt = argv[i];
        if (i + 1 >= argc)
            usage();
        const char *val = argv[++i];
        if (strcmp(opt, "--socket") == 0) {
            if (strlen(val) >= sizeof ((struct sockaddr_un *)0)->sun_path)
                die("--socket: the path is too long for a Unix socket");
            G.paths[G.npaths++] = val;
        } else if (strcmp(opt, "--users") == 0) {
            users = val;
        } else if (strcmp(opt, "--connections") == 0) {
            conns = number(opt, val, 1);
        } else if (strcmp(opt, "--seconds") == 0) {
            seconds = number(opt, val, 0);
        } else if (strcmp(opt, "--warmup") == 0) {
            warmup = number(opt, val, 0);
        } else if (strcmp(opt, "--rate") == 0) {
            G.rate = number(opt, val, 1e-9);
        } else if (strcmp(opt, "--start-at") == 0) {
            start_at = number(opt, val, 0);
        } else if (strcmp(opt, "--timeout") == 0) {
            timeout = number(opt, val, 0.001);
        } else {
            usage();
        }
    }
    if (G.npaths == 0 || !users || conns != (double)(long)conns || conns > 100000)
        usage();
    read_users(users);
    signal(SIGPIPE, SIG_IGN);

    G.cap = (size_t)conns;
    G.conns = calloc(G.cap, sizeof *G.conns);
    G.free_slots = calloc(G.cap, sizeof *G.free_slots);
    if (!G.conns || !G.free_slots)
        die("out of memory");
    for (size_t i = 0; i < G.cap; i++) {
        G.conns[i].fd = -1;
        G.free_slots[G.nfree++] = G.cap - 1 - i;
    }
    G.start = start_at >= 0 ? (int64_t)ns_of(start_at) : mono_ns();
    G.count_from = G.start + ns_of(warmup);
    G.stop_at = G.count_from + ns_of(seconds);
    G.timeout = ns_of(timeout);
    if (G.rate > 0) {   /* as verify_rate.arrivals: ceil((end - start) * rate) logins */
        double logins = (double)(G.stop_at - G.start) / 1e9 * G.rate;
        G.total_k = (uint64_t)logins;
        if ((double)G.total_k < logins)
            G.total_k++;
    }

    G.epfd = epoll_create1(EPOLL_CLOEXEC);
    G.tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (G.epfd < 0 || G.tfd < 0)
        die("epoll_create1 or timerfd_create failed");
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = EPOLLIN;
    ev.data.u32 = TIMER_TAG;
    if (epoll_ctl(G.epfd, EPOLL_CTL_ADD, G.tfd, &ev) < 0)
        die("epoll_ctl on the timerfd failed");

    run();
    print_report();
    return 0;
}
