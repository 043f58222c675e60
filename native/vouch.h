#ifndef JC_VOUCH_H
#define JC_VOUCH_H

#include <security/pam_modules.h>

/* How long after a vouched auth success the account call may skip the
 * daemon (seconds, CLOCK_MONOTONIC). Only the daemon vouches (VERDICT
 * SUCCESS_ACCT_OK, its Verdict.account_ok); a lock made in this window voids
 * the vouch through the lock marker the daemon writes (pam_jctotp.c
 * vouch_void), so the account call then asks (docs/protocol.md). */
#define JC_VOUCH_SECONDS 5

/* The daemon answered this handle's auth with VERDICT SUCCESS_ACCT_OK:
 * remember the user and the time (pam_set_data, freed with the handle). */
void jc_vouch_set(pam_handle_t *pamh, const char *user);

/* Forget any earlier vouch (every auth call starts with this). */
void jc_vouch_clear(pam_handle_t *pamh);

/* Nonzero if this handle holds a vouch for `user` younger than
 * JC_VOUCH_SECONDS. The vouch is used up either way. */
int jc_vouch_take(pam_handle_t *pamh, const char *user);

#endif
