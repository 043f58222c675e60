"""`jctotp doctor`: does root still have a way in when the directory or the
database is down? (issue 21)

pam_jctotp fails closed in an outage, so the way in that does not depend on it
is an SSH key alone for root (sshd_config.d's `Match User root` block). sshd's
own view for root (`sshd -T -C user=root,...`) when sshd is there, else the
files read as sshd reads them: the first value of a keyword wins, a matching
`Match User` block overrides the global one.
"""

from __future__ import annotations

import fnmatch
import os
import subprocess

from .host import Finding, Host
from .sshd import sshd_lines

DEFAULTS = {"authenticationmethods": "any", "permitrootlogin": "prohibit-password",
            "pubkeyauthentication": "yes", "authorizedkeysfile":
            ".ssh/authorized_keys .ssh/authorized_keys2"}
KEY_OK = ("yes", "prohibit-password", "without-password")
FIX = ("add `Match User root` with `AuthenticationMethods publickey` at the end of "
       "/etc/ssh/sshd_config.d/00-jctotp.conf (as the shipped sshd_config.d/jctotp.conf "
       "does)")


def parse_t(text: str) -> dict[str, str]:
    """`sshd -T` output: keyword -> value (lower case)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        out.setdefault(key.lower(), value.strip())
    return out


def key_alone(effective: dict[str, str]) -> bool:
    """May a public key alone log this user in?"""
    if effective.get("pubkeyauthentication", "yes").lower() == "no":
        return False
    methods = effective.get("authenticationmethods", "any").lower()
    return methods == "any" or any(m == "publickey" for m in methods.split())


def _user_matches(criteria: list[str], user: str) -> bool:
    """A Match line's criteria for `user`; only `All` and `User` are judged (anything
    else, e.g. Group or Address, is taken as not matching: the warning errs safe)."""
    words = [w.lower() for w in criteria]
    if words == ["all"]:
        return True
    if len(words) != 2 or words[0] != "user":
        return False
    hit = False
    for pattern in words[1].split(","):
        if pattern.startswith("!") and fnmatch.fnmatchcase(user, pattern[1:]):
            return False
        hit = hit or fnmatch.fnmatchcase(user, pattern)
    return hit


def from_files(host: Host, user: str) -> dict[str, str]:
    """The settings for `user` from sshd_config and its Include'd files."""
    globals_: dict[str, str] = {}
    matched: dict[str, str] = {}
    in_match: dict[str, bool] = {}   # per file: inside a Match block, and does it match
    for path, _, words in sshd_lines(host):
        key = words[0].lower()
        if key == "match":
            in_match[path] = _user_matches(words[1:], user)
        elif len(words) > 1:
            target = globals_ if path not in in_match else matched if in_match[path] else None
            if target is not None:
                target.setdefault(key, " ".join(words[1:]))
    return {**DEFAULTS, **globals_, **matched}


def for_root(host: Host) -> dict[str, str]:
    if host.sshd:
        try:
            done = subprocess.run([host.sshd, "-T", "-C",
                                   "user=root,host=localhost,addr=127.0.0.1"],
                                  capture_output=True, text=True, timeout=20)
            if done.returncode == 0:
                return {**DEFAULTS, **parse_t(done.stdout)}
        except (OSError, subprocess.SubprocessError):
            pass
    return from_files(host, "root")


def findings(host: Host, unknown_users: str) -> list[Finding]:
    if not os.path.exists(host.path("/etc/ssh/sshd_config")):
        return []
    eff = for_root(host)
    methods, permit = eff["authenticationmethods"], eff["permitrootlogin"].lower()
    if not key_alone(eff) or permit not in KEY_OK:
        return [Finding("warn", f"sshd: root has no way in with a key alone "
                        f"(AuthenticationMethods {methods}, PermitRootLogin {permit}): in a "
                        f"directory or database outage root is locked out too; {FIX}")]
    files = [f if f.startswith("/") else f"/root/{f}"
             for f in eff["authorizedkeysfile"].replace("%h", "/root").replace("%u", "root")
             .split()]
    if not any(os.path.getsize(host.path(f)) > 0 for f in files
               if os.path.isfile(host.path(f))):
        return [Finding("warn", "sshd: root may log in with a key alone, but has no key in "
                        f"{' or '.join(files)}: add one (the way in during an outage)")]
    if unknown_users != "ignore":
        return [Finding("warn", "sshd: root may log in with a key alone, but pam_jctotp's "
                        "account phase refuses users it does not know (unknown_users: "
                        "refuse); set unknown_users: ignore")]
    return [Finding("ok", f"sshd: root may log in with a key alone (AuthenticationMethods "
                    f"{methods})")]
