/*
 * The account call after a fresh success of the same handle's auth call
 * (sshd: pam_authenticate then pam_acct_mgmt in one process) need not open
 * a second connection: the daemon said, with its auth verdict, that the
 * account stage would pass now. Logins that skipped auth (publickey) hold no
 * vouch, so their account call always asks the daemon.
 */
#include "vouch.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util.h"

#define JC_VOUCH_KEY "pam_jctotp_vouch"

struct jc_vouch {
    struct timespec at;
    char user[]; /* NUL-terminated */
};

static void vouch_free(pam_handle_t *pamh, void *data, int error_status)
{
    struct jc_vouch *v = data;

    (void)pamh;
    (void)error_status;
    if (v != NULL)
        jc_wipe_free(v, sizeof(*v) + strlen(v->user) + 1);
}

void jc_vouch_clear(pam_handle_t *pamh)
{
    (void)pam_set_data(pamh, JC_VOUCH_KEY, NULL, NULL);
}

void jc_vouch_set(pam_handle_t *pamh, const char *user)
{
    size_t ul = strlen(user);
    struct jc_vouch *v = malloc(sizeof(*v) + ul + 1);

    if (v == NULL)
        return; /* no vouch: the account call asks the daemon */
    memcpy(v->user, user, ul + 1);
    if (clock_gettime(CLOCK_MONOTONIC, &v->at) != 0 || pam_set_data(pamh, JC_VOUCH_KEY, v, vouch_free) != PAM_SUCCESS)
        vouch_free(pamh, v, 0);
}

int jc_vouch_take(pam_handle_t *pamh, const char *user)
{
    const void *data = NULL;
    const struct jc_vouch *v;
    struct timespec now;
    int fresh = 0;

    if (pam_get_data(pamh, JC_VOUCH_KEY, &data) != PAM_SUCCESS || data == NULL)
        return 0;
    v = data;
    if (strcmp(v->user, user) == 0 && clock_gettime(CLOCK_MONOTONIC, &now) == 0) {
        long long ms = ((long long)now.tv_sec - (long long)v->at.tv_sec) * 1000 + (now.tv_nsec - v->at.tv_nsec) / 1000000;
        fresh = ms >= 0 && ms < JC_VOUCH_SECONDS * 1000LL;
    }
    jc_vouch_clear(pamh); /* one account call per vouch */
    return fresh;
}
