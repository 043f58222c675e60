#ifndef JC_UTIL_H
#define JC_UTIL_H

#include <stddef.h>

/* Nonzero if buf[0..len) is well-formed UTF-8 (no overlongs, no surrogates). */
int jc_utf8_valid(const unsigned char *buf, size_t len);

/* Removes, in place, every control character but '\n' and '\t':
 * C0 (< 0x20), DEL (0x7f) and C1 (U+0080..U+009F, i.e. 0xC2 0x80..0x9F). */
void jc_sanitize(char *text);

/* explicit_bzero(p, len) then free(p); NULL is fine. */
void jc_wipe_free(void *p, size_t len);

#endif
