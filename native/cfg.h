#ifndef JC_CFG_H
#define JC_CFG_H

#include <security/pam_modules.h>

#define JC_DEFAULT_SOCKET "/run/jctotp/pam.sock"
#define JC_DEFAULT_TIMEOUT 10
#define JC_DEFAULT_LOCKDIR "/var/lib/jctotp/locked"

struct jc_cfg {
    const char *socket;  /* points into argv or a literal */
    const char *factors; /* "password,totp" or "totp" */
    const char *lockdir; /* the daemon's lock markers, read only for failmode=open */
    int timeout;         /* seconds, 1..60 */
    int use_first_pass;
    int try_first_pass;
    int failmode_open;
    int debug;
};

/* Fills cfg from the module arguments. Returns PAM_SUCCESS, or
 * PAM_SERVICE_ERR (logged) for an unknown option or a bad value. */
int jc_cfg_parse(pam_handle_t *pamh, int argc, const char **argv, struct jc_cfg *cfg);

#endif
