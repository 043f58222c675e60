#include "cfg.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <syslog.h>

#include <security/pam_ext.h>

/* Returns the value if arg is "key=value", else NULL. */
static const char *opt_value(const char *arg, const char *key)
{
    size_t n = strlen(key);

    if (strncmp(arg, key, n) == 0 && arg[n] == '=')
        return arg + n + 1;
    return NULL;
}

static int parse_timeout(const char *s, int *out)
{
    char *end = NULL;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < 1 || v > 60)
        return -1;
    *out = (int)v;
    return 0;
}

int jc_cfg_parse(pam_handle_t *pamh, int argc, const char **argv, struct jc_cfg *cfg)
{
    int retval = PAM_SERVICE_ERR;
    const char *v;

    memset(cfg, 0, sizeof(*cfg));
    cfg->socket = JC_DEFAULT_SOCKET;
    cfg->factors = "password,totp";
    cfg->timeout = JC_DEFAULT_TIMEOUT;
    cfg->lockdir = JC_DEFAULT_LOCKDIR;

    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];

        if ((v = opt_value(arg, "socket")) != NULL) {
            if (*v != '/' || strlen(v) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
                pam_syslog(pamh, LOG_ERR, "Bad socket path \"%s\"", v);
                goto done;
            }
            cfg->socket = v;
        } else if ((v = opt_value(arg, "timeout")) != NULL) {
            if (parse_timeout(v, &cfg->timeout) != 0) {
                pam_syslog(pamh, LOG_ERR, "Bad timeout \"%s\" (1..60 seconds)", v);
                goto done;
            }
        } else if ((v = opt_value(arg, "factors")) != NULL) {
            if (strcmp(v, "password,totp") != 0 && strcmp(v, "totp") != 0) {
                pam_syslog(pamh, LOG_ERR, "Bad factors \"%s\" (password,totp | totp)", v);
                goto done;
            }
            cfg->factors = v;
        } else if ((v = opt_value(arg, "failmode")) != NULL) {
            if (strcmp(v, "closed") != 0 && strcmp(v, "open") != 0) {
                pam_syslog(pamh, LOG_ERR, "Bad failmode \"%s\" (closed | open)", v);
                goto done;
            }
            cfg->failmode_open = strcmp(v, "open") == 0;
        } else if ((v = opt_value(arg, "lockdir")) != NULL) {
            if (*v != '/' || strlen(v) > 512) {
                pam_syslog(pamh, LOG_ERR, "Bad lockdir \"%s\"", v);
                goto done;
            }
            cfg->lockdir = v;
        } else if (strcmp(arg, "use_first_pass") == 0) {
            cfg->use_first_pass = 1;
        } else if (strcmp(arg, "try_first_pass") == 0) {
            cfg->try_first_pass = 1;
        } else if (strcmp(arg, "debug") == 0) {
            cfg->debug = 1;
        } else {
            pam_syslog(pamh, LOG_ERR, "Unrecognized option \"%s\"", arg);
            goto done;
        }
    }
    retval = PAM_SUCCESS;
done:
    return retval;
}
