#!/bin/bash
# Container entrypoint: pick the SSH mode, start jctotpd, run sshd on
# 127.0.0.1 only, in the foreground, logging to stderr.
set -euo pipefail

if [ -n "${JCTOTP_CONFIG_YAML:-}" ]; then
    printf '%s\n' "$JCTOTP_CONFIG_YAML" >/etc/jctotp/config.yaml
fi
case ${JCTOTP_SSH_MODE:-password} in
    password) conf=jctotp.conf pam=sshd ;;
    key)      conf=jctotp-key.conf pam=sshd-key ;;
    *) echo "JCTOTP_SSH_MODE must be password or key" >&2; exit 2 ;;
esac
# 00- so that it is read before any other drop-in (sshd keeps the first value).
install -m 644 "/usr/share/jctotp/sshd_config.d/$conf" /etc/ssh/sshd_config.d/00-jctotp.conf
install -m 644 "/usr/share/jctotp/pam.d/$pam" /etc/pam.d/sshd

ssh-keygen -A >/dev/null
mkdir -p /run/sshd
jctotpd-service start
exec /usr/sbin/sshd -D -e -o "ListenAddress=127.0.0.1:${SSHD_PORT:-2222}"
