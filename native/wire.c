#include "wire.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <security/pam_ext.h>

#include "util.h"

static void deadline_in(struct timespec *deadline, int seconds)
{
    clock_gettime(CLOCK_MONOTONIC, deadline);
    deadline->tv_sec += seconds;
}

/* Milliseconds left until deadline, rounded up; 0 if passed. */
static int ms_left(const struct timespec *deadline)
{
    struct timespec now;
    long long ns;

    clock_gettime(CLOCK_MONOTONIC, &now);
    ns = (long long)(deadline->tv_sec - now.tv_sec) * 1000000000LL + (deadline->tv_nsec - now.tv_nsec);
    return ns <= 0 ? 0 : (int)((ns + 999999LL) / 1000000LL);
}

/* Waits until fd is ready for events or the deadline passes. */
static enum jc_io wait_fd(int fd, short events, const struct timespec *deadline)
{
    struct pollfd pfd = { .fd = fd, .events = events, .revents = 0 };
    int ms, n;

    for (;;) {
        ms = ms_left(deadline);
        if (ms == 0)
            return JC_TIMEOUT;
        n = poll(&pfd, 1, ms);
        if (n > 0)
            return JC_OK; /* POLLHUP/POLLERR: the next recv/send says what */
        if (n == 0)
            return JC_TIMEOUT;
        if (errno != EINTR)
            return JC_FAULT;
    }
}

/* Only "no such socket" and "nobody listens on it" mean the daemon is
 * absent. A full backlog (the connect times out) means it is there but
 * slow; EACCES, ENOTSOCK and the rest are a misconfiguration or a fault:
 * all of these fail closed. */
static enum jc_io connect_error(int err)
{
    if (err == ENOENT || err == ECONNREFUSED)
        return JC_NOBODY;
    if (err == EAGAIN || err == EWOULDBLOCK || err == EINPROGRESS || err == ETIMEDOUT)
        return JC_TIMEOUT;
    return JC_FAULT;
}

enum jc_io jc_connect(pam_handle_t *pamh, const char *path, int timeout, int *fd)
{
    enum jc_io retval = JC_FAULT;
    struct sockaddr_un sa;
    /* A blocking AF_UNIX connect waits for room in the listen backlog;
     * SO_SNDTIMEO bounds that wait (poll cannot: it reports EAGAIN). */
    struct timeval tv = { .tv_sec = timeout, .tv_usec = 0 };
    int s = -1, err = 0;

    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    strncpy(sa.sun_path, path, sizeof(sa.sun_path) - 1);

    s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) {
        pam_syslog(pamh, LOG_ERR, "socket: %m; failing closed");
        goto done;
    }
    if (setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) != 0) {
        pam_syslog(pamh, LOG_ERR, "setsockopt(SO_SNDTIMEO): %m; failing closed");
        goto done;
    }
    while (connect(s, (const struct sockaddr *)&sa, sizeof(sa)) != 0) {
        if (errno == EINTR)
            continue;
        err = errno;
        retval = connect_error(err);
        if (retval == JC_TIMEOUT)
            pam_syslog(pamh, LOG_ERR, "jctotpd at %s accepted no connection within %d s (busy, not absent); failing closed",
                       path, timeout);
        else if (retval == JC_FAULT)
            pam_syslog(pamh, LOG_ERR, "cannot connect to jctotpd at %s: %m; failing closed", path);
        goto done;
    }
    *fd = s;
    s = -1;
    retval = JC_OK;
done:
    if (s >= 0)
        close(s);
    if (err != 0)
        errno = err; /* JC_NOBODY: the caller logs why, with %m */
    return retval;
}

enum jc_io jc_send(pam_handle_t *pamh, int fd, unsigned char *frame, size_t len, int timeout)
{
    enum jc_io retval = JC_FAULT;
    struct timespec deadline;
    size_t total = JC_HDR + len, sent = 0;
    ssize_t n;

    frame[0] = (unsigned char)(len >> 24);
    frame[1] = (unsigned char)(len >> 16);
    frame[2] = (unsigned char)(len >> 8);
    frame[3] = (unsigned char)len;
    deadline_in(&deadline, timeout);
    while (sent < total) {
        retval = wait_fd(fd, POLLOUT, &deadline);
        if (retval != JC_OK) {
            pam_syslog(pamh, LOG_ERR, "sending to jctotpd: %s; failing closed",
                       retval == JC_TIMEOUT ? "timed out" : "poll failed");
            goto done;
        }
        n = send(fd, frame + sent, total - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            continue;
        if (n <= 0) {
            pam_syslog(pamh, LOG_ERR, "sending to jctotpd: %m; failing closed");
            retval = JC_FAULT;
            goto done;
        }
        sent += (size_t)n;
    }
    retval = JC_OK;
done:
    return retval;
}

/* Reads exactly len bytes before the deadline. */
static enum jc_io read_full(pam_handle_t *pamh, int fd, unsigned char *buf, size_t len,
                            const struct timespec *deadline)
{
    enum jc_io retval = JC_FAULT;
    size_t got = 0;
    ssize_t n;

    while (got < len) {
        retval = wait_fd(fd, POLLIN, deadline);
        if (retval != JC_OK) {
            pam_syslog(pamh, LOG_ERR, "no answer from jctotpd: %s; failing closed",
                       retval == JC_TIMEOUT ? "timed out (a slow daemon is not an absent one)" : "poll failed");
            goto done;
        }
        n = recv(fd, buf + got, len - got, MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            continue;
        retval = JC_FAULT;
        if (n < 0) {
            pam_syslog(pamh, LOG_ERR, "reading from jctotpd: %m; failing closed");
            goto done;
        }
        if (n == 0) {
            pam_syslog(pamh, LOG_ERR, "jctotpd closed the connection before the verdict; failing closed");
            goto done;
        }
        got += (size_t)n;
    }
    retval = JC_OK;
done:
    return retval;
}

size_t jc_frame_len(const unsigned char hdr[JC_HDR])
{
    unsigned long len = (unsigned long)hdr[0] << 24 | (unsigned long)hdr[1] << 16 | (unsigned long)hdr[2] << 8 | hdr[3];

    return len == 0 || len > JC_MAX_FRAME ? 0 : (size_t)len;
}

const char *jc_payload_error(const char *payload, size_t len)
{
    if (memchr(payload, '\0', len) != NULL)
        return "NUL byte in frame";
    if (!jc_utf8_valid((const unsigned char *)payload, len))
        return "frame is not UTF-8";
    return NULL;
}

enum jc_io jc_recv(pam_handle_t *pamh, int fd, char *buf, int timeout)
{
    enum jc_io retval;
    struct timespec deadline;
    unsigned char hdr[JC_HDR];
    const char *why;
    size_t len;

    deadline_in(&deadline, timeout);
    retval = read_full(pamh, fd, hdr, JC_HDR, &deadline);
    if (retval != JC_OK)
        goto done;
    retval = JC_FAULT;
    len = jc_frame_len(hdr);
    if (len == 0) {
        pam_syslog(pamh, LOG_ERR, "protocol error: frame length outside 1..%u; failing closed", JC_MAX_FRAME);
        goto done;
    }
    retval = read_full(pamh, fd, (unsigned char *)buf, len, &deadline);
    if (retval != JC_OK)
        goto done;
    retval = JC_FAULT;
    buf[len] = '\0';
    why = jc_payload_error(buf, len);
    if (why != NULL) {
        pam_syslog(pamh, LOG_ERR, "protocol error: %s; failing closed", why);
        goto done;
    }
    retval = JC_OK;
done:
    return retval;
}

enum jc_tag jc_parse(char *payload, char **text)
{
    static const struct {
        const char *name;
        enum jc_tag tag;
    } tags[] = {
        { "PROMPT_OFF", JC_TAG_PROMPT_OFF }, { "PROMPT_ON", JC_TAG_PROMPT_ON }, { "INFO", JC_TAG_INFO },
        { "ERROR", JC_TAG_ERROR },           { "VERDICT", JC_TAG_VERDICT },
    };
    size_t n = strcspn(payload, " ");

    *text = payload[n] == ' ' ? payload + n + 1 : payload + n;
    for (size_t i = 0; i < sizeof(tags) / sizeof(tags[0]); i++)
        if (strlen(tags[i].name) == n && strncmp(payload, tags[i].name, n) == 0)
            return tags[i].tag;
    return JC_TAG_BAD;
}

int jc_verdict(const char *code)
{
    static const struct {
        const char *name;
        int pam;
    } codes[] = {
        { "SUCCESS", PAM_SUCCESS },
        { "SUCCESS_ACCT_OK", PAM_SUCCESS }, /* and the account stage passes now (vouch.h) */
        { "AUTH_ERR", PAM_AUTH_ERR },
        { "USER_UNKNOWN", PAM_USER_UNKNOWN },
        { "MAXTRIES", PAM_MAXTRIES },
        { "ACCT_EXPIRED", PAM_ACCT_EXPIRED },
        { "PERM_DENIED", PAM_PERM_DENIED },
        { "IGNORE", PAM_IGNORE },
        { "AUTHINFO_UNAVAIL", PAM_AUTHINFO_UNAVAIL },
    };

    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
        if (strcmp(code, codes[i].name) == 0)
            return codes[i].pam;
    return -1;
}
