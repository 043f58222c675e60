#!/bin/bash
# Check sshd's EFFECTIVE configuration (sshd -T, after every Include and
# drop-in) for the settings pam_jctotp needs, and fail on the known traps.
# Usage: check-sshd-config.sh [extra sshd -T options, e.g. -f FILE or
#        -C user=alice,host=h,addr=203.0.113.9 to evaluate Match blocks]
# Exit 0: fine; 1: a trap; 2: sshd -T itself failed.
set -euo pipefail

sshd=${SSHD:-/usr/sbin/sshd}
where() {
    echo "Files that set these keywords, in the order sshd reads them:" >&2
    grep -inE '^[[:space:]]*(Include|UsePAM|KbdInteractiveAuthentication|ChallengeResponseAuthentication|PasswordAuthentication|AuthenticationMethods)' \
        /etc/ssh/sshd_config /etc/ssh/sshd_config.d/*.conf >&2 2>/dev/null || true
}
if ! eff=$("$sshd" -T "$@" 2>&1); then
    # e.g. "AuthenticationMethods cannot be satisfied": an earlier file
    # turned keyboard-interactive off, and sshd will not even start.
    printf 'sshd -T failed (sshd would not start):\n%s\n' "$eff" >&2
    where
    exit 2
fi
get() { awk -v k="$1" '$1 == k { $1 = ""; sub(/^ /, ""); print; exit }' <<<"$eff"; }

usepam=$(get usepam)
kbd=$(get kbdinteractiveauthentication)
pw=$(get passwordauthentication)
methods=$(get authenticationmethods)
printf '%-30s %s\n' usepam "$usepam" kbdinteractiveauthentication "$kbd" \
    passwordauthentication "$pw" authenticationmethods "$methods"

bad=0
trap_() { echo "TRAP: $*" >&2; bad=1; }
[ "$usepam" = yes ] || trap_ "UsePAM is not yes: sshd never calls pam_jctotp."
[ "$kbd" = yes ] || trap_ "KbdInteractiveAuthentication is not yes: an earlier" \
    "file set it (sshd keeps the first value); install our drop-in as 00-jctotp.conf."
[ "$pw" = no ] || trap_ "PasswordAuthentication is yes: with UsePAM sshd feeds the" \
    "password into every hidden prompt, the code prompt too. Set it to no."
case " ${methods//,/ } " in
    *" keyboard-interactive "*) ;;
    *) trap_ "AuthenticationMethods ($methods) does not require keyboard-interactive:" \
        "a login can skip the code. Use keyboard-interactive or publickey,keyboard-interactive." ;;
esac
[ $bad -eq 0 ] || where
exit $bad
