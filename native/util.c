#include "util.h"

#include <stdlib.h>
#include <string.h>

int jc_utf8_valid(const unsigned char *buf, size_t len)
{
    size_t i = 0;

    while (i < len) {
        unsigned char c = buf[i];
        size_t n;
        unsigned char lo = 0x80, hi = 0xBF; /* allowed range of the 2nd byte */

        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            n = 1;
        } else if (c >= 0xE0 && c <= 0xEF) {
            n = 2;
            if (c == 0xE0)
                lo = 0xA0; /* overlong */
            else if (c == 0xED)
                hi = 0x9F; /* surrogates */
        } else if (c >= 0xF0 && c <= 0xF4) {
            n = 3;
            if (c == 0xF0)
                lo = 0x90; /* overlong */
            else if (c == 0xF4)
                hi = 0x8F; /* > U+10FFFF */
        } else {
            return 0;
        }
        if (len - i <= n || buf[i + 1] < lo || buf[i + 1] > hi)
            return 0;
        for (size_t k = 2; k <= n; k++)
            if ((buf[i + k] & 0xC0) != 0x80)
                return 0;
        i += n + 1;
    }
    return 1;
}

void jc_sanitize(char *text)
{
    unsigned char *r = (unsigned char *)text;
    unsigned char *w = r;

    while (*r) {
        if (r[0] == 0xC2 && r[1] >= 0x80 && r[1] <= 0x9F) {
            r += 2;
        } else if ((*r < 0x20 && *r != '\n' && *r != '\t') || *r == 0x7F) {
            r++;
        } else {
            *w++ = *r++;
        }
    }
    *w = '\0';
}

void jc_wipe_free(void *p, size_t len)
{
    if (p != NULL) {
        explicit_bzero(p, len);
        free(p);
    }
}
