#ifndef JC_WIRE_H
#define JC_WIRE_H

#include <stddef.h>
#include <security/pam_modules.h>

#define JC_MAX_FRAME 16384u /* payload bytes, see docs/protocol.md */
#define JC_HDR 4u

/* Outcome of a socket operation; every failure is logged by wire.c. */
enum jc_io {
    JC_OK = 0,
    JC_UNAVAIL, /* no daemon: connect failed or timed out, or a frame timed out */
    JC_FAULT    /* broken connection or protocol violation */
};

enum jc_tag { JC_TAG_BAD = 0, JC_TAG_PROMPT_OFF, JC_TAG_PROMPT_ON, JC_TAG_INFO, JC_TAG_ERROR, JC_TAG_VERDICT };

/* Connects a SOCK_CLOEXEC stream socket to path within timeout seconds. */
enum jc_io jc_connect(pam_handle_t *pamh, const char *path, int timeout, int *fd);

/* Sends one frame. frame[0..JC_HDR) is room for the length; the payload,
 * len bytes, follows it. */
enum jc_io jc_send(pam_handle_t *pamh, int fd, unsigned char *frame, size_t len, int timeout);

/* Receives one frame into buf (JC_MAX_FRAME + 1 bytes) as a NUL-terminated
 * string: length 1..JC_MAX_FRAME, no NUL, valid UTF-8. */
enum jc_io jc_recv(pam_handle_t *pamh, int fd, char *buf, int timeout);

/* Splits a received payload into its tag and text ("" if none). */
enum jc_tag jc_parse(char *payload, char **text);

/* PAM return code for a VERDICT code, or -1 if unknown. */
int jc_verdict(const char *code);

#endif
