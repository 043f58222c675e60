/*
 * libFuzzer harness for the shim's frame receive path (native/wire.c).
 * The input is what a daemon could send. It goes through a socketpair into
 * the real jc_recv (header, length check, NUL and UTF-8 checks), then frame
 * after frame through jc_parse, jc_verdict and jc_sanitize as jc_call does,
 * until a verdict or an error. Built by `make -C native fuzz` with
 * -fsanitize=fuzzer,address,undefined; run by scripts/fuzz.sh.
 *
 * Input: one mode byte, then the data. Mode bit 0 clear: the data is the
 * byte stream as is. Set: the data is one frame header followed by a
 * pattern repeated up to the length the header announces (capped just past
 * JC_MAX_FRAME), so frames at and around the size limit are a few bytes of
 * input away rather than 16 KB (coverage alone would never keep such a
 * large input: it looks like any small INFO frame).
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <security/pam_ext.h>

#include "../util.h"
#include "../wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Stands in for libpam's: formats the message (so a bad format argument
 * shows up under ASan) and drops it. */
void pam_syslog(const pam_handle_t *pamh, int priority, const char *fmt, ...)
{
    char line[1024];
    va_list ap;

    (void)pamh;
    (void)priority;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
}

/* What the shim shows a user: valid UTF-8, no control character but
 * '\n' and '\t' (C0, DEL, C1). */
static void check_shown(const char *text)
{
    const unsigned char *p = (const unsigned char *)text;
    size_t n = strlen(text);

    if (!jc_utf8_valid(p, n))
        abort();
    for (size_t i = 0; i < n; i++) {
        if ((p[i] < 0x20 && p[i] != '\n' && p[i] != '\t') || p[i] == 0x7F)
            abort();
        if (p[i] == 0xC2 && i + 1 < n && p[i + 1] >= 0x80 && p[i + 1] <= 0x9F)
            abort();
    }
}

static void converse(int fd, char *buf)
{
    enum jc_tag tag;
    char *text;

    while (jc_recv(NULL, fd, buf, 1) == JC_OK) {
        if (strlen(buf) == 0 || strlen(buf) > JC_MAX_FRAME)
            abort(); /* jc_recv promised 1..JC_MAX_FRAME bytes, no NUL */
        tag = jc_parse(buf, &text);
        if (tag == JC_TAG_BAD)
            break;
        if (tag == JC_TAG_VERDICT) {
            (void)jc_verdict(text);
            break;
        }
        jc_sanitize(text);
        check_shown(text);
    }
}

#define EXPAND_MAX (JC_HDR + JC_MAX_FRAME + 16u)

/* Mode "expand": the header, then the pattern repeated to the announced length. */
static size_t expand(const uint8_t *data, size_t size, uint8_t *out)
{
    size_t want, len = 0;

    if (size <= JC_HDR)
        goto done;
    want = JC_HDR + ((size_t)data[0] << 24 | (size_t)data[1] << 16 | (size_t)data[2] << 8 | data[3]);
    if (want > EXPAND_MAX)
        want = EXPAND_MAX;
    memcpy(out, data, JC_HDR);
    for (len = JC_HDR; len < want; len++)
        out[len] = data[JC_HDR + (len - JC_HDR) % (size - JC_HDR)];
done:
    return len;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t stream[EXPAND_MAX];
    int sv[2] = { -1, -1 };
    char *buf = malloc(JC_MAX_FRAME + 1); /* exact size: ASan sees any overrun */
    ssize_t n;

    if (size == 0 || buf == NULL || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
        goto done;
    if (data[0] & 1) {
        size = expand(data + 1, size - 1, stream);
        data = stream;
    } else {
        data++;
        size--;
    }
    /* The whole stream fits the socket buffer (-max_len in scripts/fuzz.sh);
     * a partial write only shortens it. */
    n = size > 0 ? send(sv[1], data, size, MSG_DONTWAIT | MSG_NOSIGNAL) : 0;
    (void)n;
    shutdown(sv[1], SHUT_WR);
    converse(sv[0], buf);
done:
    if (sv[0] >= 0)
        close(sv[0]);
    if (sv[1] >= 0)
        close(sv[1]);
    free(buf);
    return 0;
}
