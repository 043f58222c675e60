/*
 * pam_jctotp: relays a PAM conversation to jctotpd over a Unix socket.
 * All policy lives in the daemon; see docs/protocol.md for the wire format.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#define PAM_SM_AUTH
#define PAM_SM_ACCOUNT
#define PAM_SM_PASSWORD
#include <security/pam_appl.h>
#include <security/pam_ext.h>
#include <security/pam_modules.h>

#include "cfg.h"
#include "util.h"
#include "vouch.h"
#include "wire.h"

/* Appends "key=value\n" to the HELLO payload; refuses a value with '\n'
 * or one that is not UTF-8 (the protocol could not carry it). */
static int hello_add(pam_handle_t *pamh, char *payload, size_t *len, const char *key, const char *value)
{
    size_t kl = strlen(key), vl = value != NULL ? strlen(value) : 0;

    if (vl > 0 && (memchr(value, '\n', vl) != NULL || !jc_utf8_valid((const unsigned char *)value, vl))) {
        pam_syslog(pamh, LOG_ERR, "refusing to send %s: newline or not UTF-8", key);
        return -1;
    }
    if (*len + kl + vl + 2 > JC_MAX_FRAME) {
        pam_syslog(pamh, LOG_ERR, "refusing to send %s: too long", key);
        return -1;
    }
    memcpy(payload + *len, key, kl);
    payload[*len + kl] = '=';
    if (vl > 0)
        memcpy(payload + *len + kl + 1, value, vl);
    payload[*len + kl + 1 + vl] = '\n';
    *len += kl + vl + 2;
    return 0;
}

static const char *get_str_item(pam_handle_t *pamh, int item)
{
    const void *v = NULL;

    if (pam_get_item(pamh, item, &v) != PAM_SUCCESS)
        return NULL;
    return v;
}

/* One round of the PAM conversation. *resp (if asked for) must be wiped
 * and freed by the caller. */
static int converse(pam_handle_t *pamh, int style, const char *text, char **resp)
{
    int retval = PAM_CONV_ERR;
    const struct pam_conv *conv = NULL;
    struct pam_message msg = { .msg_style = style, .msg = text };
    const struct pam_message *msgp = &msg;
    struct pam_response *r = NULL;

    if (pam_get_item(pamh, PAM_CONV, (const void **)&conv) != PAM_SUCCESS || conv == NULL || conv->conv == NULL) {
        pam_syslog(pamh, LOG_ERR, "no conversation function");
        goto done;
    }
    retval = conv->conv(1, &msgp, &r, conv->appdata_ptr);
    if (retval != PAM_SUCCESS)
        goto done;
    retval = PAM_CONV_ERR;
    if (resp != NULL) {
        if (r == NULL)
            goto done;
        *resp = r->resp != NULL ? r->resp : strdup("");
        r->resp = NULL;
        if (*resp == NULL)
            goto done;
    }
    retval = PAM_SUCCESS;
done:
    if (r != NULL) {
        if (r->resp != NULL)
            jc_wipe_free(r->resp, strlen(r->resp));
        free(r);
    }
    if (retval == PAM_CONV_AGAIN)
        retval = PAM_INCOMPLETE;
    return retval;
}

/* Writes the HELLO payload; fails (logged) if a value has a newline. */
static int build_hello(pam_handle_t *pamh, char *p, size_t *len, const char *call, const char *user,
                       const struct jc_cfg *cfg, const char *authtok)
{
    static const char first[] = "HELLO JCTOTP/1\n";
    char timeout[16], uid[24];

    /* The daemon keeps its delays (fail_delay) below our timeout: a verdict
     * that arrives after we gave up is a login refused for nothing. */
    snprintf(timeout, sizeof(timeout), "%d", cfg->timeout);
    /* Who asks: the real uid of the process that runs PAM (the user behind
     * su or sudo; 0 for sshd, whose requester is PAM_RHOST). The daemon
     * budgets waiting conversations and password checks per requester. */
    snprintf(uid, sizeof(uid), "%lu", (unsigned long)getuid());
    memcpy(p, first, sizeof(first) - 1);
    *len = sizeof(first) - 1;
    if (hello_add(pamh, p, len, "call", call) || hello_add(pamh, p, len, "service", get_str_item(pamh, PAM_SERVICE)) ||
        hello_add(pamh, p, len, "user", user) || hello_add(pamh, p, len, "rhost", get_str_item(pamh, PAM_RHOST)) ||
        hello_add(pamh, p, len, "tty", get_str_item(pamh, PAM_TTY)) || hello_add(pamh, p, len, "factors", cfg->factors) ||
        hello_add(pamh, p, len, "timeout", timeout) || hello_add(pamh, p, len, "uid", uid) ||
        (authtok != NULL && hello_add(pamh, p, len, "authtok", authtok)) ||
        (strcmp(call, "auth") == 0 && hello_add(pamh, p, len, "acct_hint", "1")))
        return -1;
    return 0;
}

/* failmode=open never opens for a locked account: the daemon keeps one file
 * per locked user in lockdir. Anything but a clean "no such file" in an
 * existing lockdir counts as locked. NULL if not locked, else why. */
static const char *lock_reason(const char *lockdir, const char *user)
{
    const char *why = "unsafe user name";
    char path[PATH_MAX];
    struct stat st;
    int n;

    if (strchr(user, '/') != NULL || strcmp(user, ".") == 0 || strcmp(user, "..") == 0)
        goto done;
    why = "lockdir missing or not a directory";
    if (stat(lockdir, &st) != 0 || !S_ISDIR(st.st_mode))
        goto done;
    why = "lock marker path too long";
    n = snprintf(path, sizeof(path), "%s/%s", lockdir, user);
    if (n < 0 || (size_t)n >= sizeof(path))
        goto done;
    why = "user is locked";
    if (lstat(path, &st) == 0)
        goto done;
    why = errno == ENOENT ? NULL : "lock marker unreadable";
done:
    return why;
}

/* A vouch (vouch.h) is void once the user has a lock marker: the daemon writes
 * it (core/lockout.py) before it answers the failure that locked, so a lock
 * made within JC_VOUCH_SECONDS of the auth verdict still refuses the account
 * stage: the account call then asks the daemon. One lstat(), no connection.
 * No lockdir means this host keeps no markers: the daemon's vouch stands. */
static int vouch_void(const struct jc_cfg *cfg, const char *user)
{
    struct stat st;

    if (stat(cfg->lockdir, &st) != 0 && errno == ENOENT)
        return 0; /* this host keeps no markers */
    return lock_reason(cfg->lockdir, user) != NULL;
}

/* connect() found nobody listening (ENOENT, ECONNREFUSED; errno still says
 * which): the one case failmode=open applies to, and never for a locked user.
 * Logs one line. */
static int nobody_listens(pam_handle_t *pamh, const struct jc_cfg *cfg, const char *user)
{
    int retval = PAM_AUTHINFO_UNAVAIL, err = errno;
    const char *why;

    if (!cfg->failmode_open) {
        pam_syslog(pamh, LOG_ERR, "jctotpd not listening at %s: %m; failing closed", cfg->socket);
        goto done;
    }
    why = lock_reason(cfg->lockdir, user);
    errno = err;
    if (why != NULL) {
        pam_syslog(pamh, LOG_CRIT, "jctotpd not listening at %s: %m; failmode=open refused for %s (%s, lockdir %s)",
                   cfg->socket, user, why, cfg->lockdir);
        goto done;
    }
    pam_syslog(pamh, LOG_CRIT, "jctotpd not listening at %s: %m; failmode=open: PAM_IGNORE for user %s", cfg->socket,
               user);
    retval = PAM_IGNORE;
done:
    return retval;
}

static int jc_call(pam_handle_t *pamh, int argc, const char **argv, const char *call)
{
    int retval = PAM_SERVICE_ERR;
    struct jc_cfg cfg;
    enum jc_io io;
    enum jc_tag tag;
    const char *user = NULL, *authtok = NULL;
    unsigned char *out = NULL; /* outgoing frame: JC_HDR bytes, then the payload */
    char *in = NULL, *text, *answer = NULL;
    size_t len = 0;
    int fd = -1, code, rc;

    if (jc_cfg_parse(pamh, argc, argv, &cfg) != PAM_SUCCESS)
        goto done;
    rc = pam_get_user(pamh, &user, NULL);
    if (rc != PAM_SUCCESS) {
        retval = rc == PAM_CONV_AGAIN ? PAM_INCOMPLETE : rc;
        goto done;
    }
    retval = PAM_USER_UNKNOWN;
    if (user == NULL || *user == '\0')
        goto done;
    if (strcmp(call, "auth") == 0)
        jc_vouch_clear(pamh);
    if (strcmp(call, "acct") == 0 && jc_vouch_take(pamh, user)) {
        /* This handle's auth succeeded moments ago and the daemon vouched
         * that the account stage passes too (see vouch.h), unless the user
         * was locked since (vouch_void): then the daemon decides. */
        if (!vouch_void(&cfg, user)) {
            if (cfg.debug)
                pam_syslog(pamh, LOG_DEBUG, "account of %s vouched for by the auth call", user);
            retval = PAM_SUCCESS;
            goto done;
        }
        pam_syslog(pamh, LOG_NOTICE, "vouch for %s void: locked since the auth call; asking jctotpd", user);
    }
    if (strcmp(call, "auth") == 0 && (cfg.use_first_pass || cfg.try_first_pass)) {
        authtok = get_str_item(pamh, PAM_AUTHTOK);
        retval = PAM_AUTH_ERR;
        if (authtok == NULL && cfg.use_first_pass) {
            pam_syslog(pamh, LOG_NOTICE, "use_first_pass: no password from an earlier module");
            goto done;
        }
    }

    retval = PAM_BUF_ERR;
    out = malloc(JC_HDR + JC_MAX_FRAME);
    in = malloc(JC_MAX_FRAME + 1);
    if (out == NULL || in == NULL)
        goto done;

    retval = PAM_AUTHINFO_UNAVAIL;
    if (build_hello(pamh, (char *)out + JC_HDR, &len, call, user, &cfg, authtok) != 0)
        goto done;

    io = jc_connect(pamh, cfg.socket, cfg.timeout, &fd);
    if (io == JC_NOBODY) {
        retval = nobody_listens(pamh, &cfg, user);
        goto done;
    }
    if (io == JC_OK && cfg.debug)
        pam_syslog(pamh, LOG_DEBUG, "connected to %s, call=%s user=%s", cfg.socket, call, user);
    if (io == JC_OK)
        io = jc_send(pamh, fd, out, len, cfg.timeout);
    for (;;) {
        if (io == JC_OK)
            io = jc_recv(pamh, fd, in, cfg.timeout);
        /* Somebody listened: from here every fault fails closed (wire.c
         * logged why), whatever failmode says. */
        retval = PAM_AUTHINFO_UNAVAIL;
        if (io != JC_OK)
            goto done;
        tag = jc_parse(in, &text);
        if (tag == JC_TAG_BAD) {
            pam_syslog(pamh, LOG_ERR, "protocol error: unknown frame tag; failing closed");
            goto done;
        }
        if (tag == JC_TAG_VERDICT) {
            code = jc_verdict(text);
            if (code < 0) {
                pam_syslog(pamh, LOG_ERR, "protocol error: unknown verdict; failing closed");
                goto done;
            }
            if (cfg.debug)
                pam_syslog(pamh, LOG_DEBUG, "verdict %s for %s", text, user);
            if (strcmp(call, "auth") == 0 && strcmp(text, "SUCCESS_ACCT_OK") == 0)
                jc_vouch_set(pamh, user);
            retval = code;
            goto done;
        }
        jc_sanitize(text);
        if (tag == JC_TAG_INFO || tag == JC_TAG_ERROR) {
            rc = converse(pamh, tag == JC_TAG_INFO ? PAM_TEXT_INFO : PAM_ERROR_MSG, text, NULL);
            if (rc != PAM_SUCCESS) {
                retval = rc;
                goto done;
            }
            continue;
        }
        rc = converse(pamh, tag == JC_TAG_PROMPT_OFF ? PAM_PROMPT_ECHO_OFF : PAM_PROMPT_ECHO_ON, text, &answer);
        if (rc != PAM_SUCCESS) {
            retval = rc;
            goto done;
        }
        len = strlen(answer);
        retval = PAM_AUTH_ERR;
        if (len > JC_MAX_FRAME - 7 || !jc_utf8_valid((const unsigned char *)answer, len)) {
            pam_syslog(pamh, LOG_NOTICE, "answer too long or not UTF-8");
            goto done;
        }
        /* "ANSWER <text>", or "ANSWER" alone for an empty reply */
        memcpy(out + JC_HDR, "ANSWER ", 7);
        memcpy(out + JC_HDR + 7, answer, len);
        jc_wipe_free(answer, len);
        answer = NULL;
        len = len > 0 ? len + 7 : 6;
        io = jc_send(pamh, fd, out, len, cfg.timeout);
    }
done:
    if (fd >= 0)
        close(fd);
    if (answer != NULL)
        jc_wipe_free(answer, strlen(answer));
    jc_wipe_free(out, JC_HDR + JC_MAX_FRAME);
    jc_wipe_free(in, JC_MAX_FRAME + 1);
    return retval;
}

PAM_EXTERN int pam_sm_authenticate(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
    (void)flags;
    return jc_call(pamh, argc, argv, "auth");
}

PAM_EXTERN int pam_sm_setcred(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
    (void)pamh;
    (void)flags;
    (void)argc;
    (void)argv;
    return PAM_SUCCESS;
}

PAM_EXTERN int pam_sm_acct_mgmt(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
    (void)flags;
    return jc_call(pamh, argc, argv, "acct");
}

/* passwd through PAM (docs/protocol.md, "call=passwd"). Linux-PAM runs the
 * password stack twice and the second pass acts on the first pass's return
 * codes, so the preliminary check asks the daemon too: SUCCESS for a user it
 * manages, PAM_IGNORE for anyone else (pam_unix's line then changes theirs,
 * with the new password this module asked for in the update pass).
 * It asks the user nothing and uses nothing up; the update pass asks the
 * current password, the code, and the new password twice. */
PAM_EXTERN int pam_sm_chauthtok(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
    int retval;
    const char *newtok = NULL;

    if (flags & PAM_PRELIM_CHECK)
        return jc_call(pamh, argc, argv, "passwd_prelim");
    if (!(flags & PAM_UPDATE_AUTHTOK))
        return PAM_SERVICE_ERR;
    retval = jc_call(pamh, argc, argv, "passwd");
    /* A user jctotpd does not manage: the password module after this one
     * (pam_unix, which pam-auth-update gives use_authtok once a Primary module
     * comes first) takes the new password from PAM_AUTHTOK, so it is asked for
     * here, as pam_pwquality does: Linux-PAM asks twice and compares, and
     * returns at once what an earlier module already set. */
    if (retval == PAM_IGNORE) {
        int rc = pam_get_authtok(pamh, PAM_AUTHTOK, &newtok, NULL);
        if (rc != PAM_SUCCESS)
            retval = rc == PAM_CONV_AGAIN ? PAM_INCOMPLETE : rc;
    }
    return retval;
}
