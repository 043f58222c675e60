#ifndef JC_WIRE_H
#define JC_WIRE_H

#include <stddef.h>
#include <security/pam_modules.h>

#define JC_MAX_FRAME 16384u /* payload bytes, see docs/protocol.md */
#define JC_HDR 4u

/* Outcome of a socket operation. Only JC_NOBODY may ever open the door
 * (failmode=open): it means nobody listens. Once somebody has answered the
 * connect, every failure is JC_TIMEOUT or JC_FAULT and fails closed, since
 * a daemon that holds back a verdict (fail_delay) must not look absent. */
enum jc_io {
    JC_OK = 0,
    JC_NOBODY,  /* connect: ENOENT or ECONNREFUSED, not logged (errno kept) */
    JC_TIMEOUT, /* someone listens but is slow: connect (backlog full), send or a frame timed out */
    JC_FAULT    /* anything else: connect refused otherwise, broken connection, protocol violation */
};

enum jc_tag { JC_TAG_BAD = 0, JC_TAG_PROMPT_OFF, JC_TAG_PROMPT_ON, JC_TAG_INFO, JC_TAG_ERROR, JC_TAG_VERDICT };

/* Connects a SOCK_CLOEXEC stream socket to path within timeout seconds.
 * Logs every failure but JC_NOBODY, which leaves errno set for the caller. */
enum jc_io jc_connect(pam_handle_t *pamh, const char *path, int timeout, int *fd);

/* Sends one frame. frame[0..JC_HDR) is room for the length; the payload,
 * len bytes, follows it. */
enum jc_io jc_send(pam_handle_t *pamh, int fd, unsigned char *frame, size_t len, int timeout);

/* Receives one frame into buf (JC_MAX_FRAME + 1 bytes) as a NUL-terminated
 * string: length 1..JC_MAX_FRAME, no NUL, valid UTF-8. */
enum jc_io jc_recv(pam_handle_t *pamh, int fd, char *buf, int timeout);

/* The payload length a frame header announces, or 0 if it is outside
 * 1..JC_MAX_FRAME (a protocol violation). */
size_t jc_frame_len(const unsigned char hdr[JC_HDR]);

/* NULL if payload[0..len) may be shown (no NUL, valid UTF-8), else why not. */
const char *jc_payload_error(const char *payload, size_t len);

/* Splits a received payload into its tag and text ("" if none). */
enum jc_tag jc_parse(char *payload, char **text);

/* PAM return code for a VERDICT code, or -1 if unknown. */
int jc_verdict(const char *code);

#endif
