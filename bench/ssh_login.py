"""Wall time of one whole SSH login (password + code) with the real OpenSSH
client against the real sshd in a container: ours alone, or side by side with
the classic pam_unix + google-authenticator stack (issue 15).

    python3 bench/ssh_login.py [-n 20]                         # ours only
    python3 bench/ssh_login.py --classic [-n 40] [--yescrypt-cost 5,6]

One login = spawn `ssh ... true`, answer the password prompt and "Verification
code: ", wait for the end of its output: TCP connect, key exchange, both PAM
round trips, the account and session stacks, the session and its teardown.
Each login uses its own user, so that no code is refused as a replay. Prints
median and p95, and the split: to the password prompt, password -> code
prompt, code -> exit.

--classic: one container (bench image = the test image + Debian's
libpam-google-authenticator) runs two sshds with the same sshd_config on
127.0.0.1: ours (PAM service sshd: pam_jctotp, the directory password
argon2id at the default OWASP-minimum parameters, then the code) and the
classic one (PAM service sshd-classic: `auth required pam_unix.so` +
`auth required pam_google_authenticator.so`, the same account and session
stacks). The classic users' /etc/shadow hashes are yescrypt at each
`--yescrypt-cost` (5 = Debian 12's default); the logins alternate stack by
stack, login by login. The host's /etc/pam.d and sshd config are not touched.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pexpect
import pyotp
from benchlib import REPO, ga_secret_text, percentile

sys.path.insert(0, str(REPO / "tests" / "ssh"))

from sshlib import IMAGE, Sshd, Totp, build_image, free_port  # noqa: E402

# The test image plus Debian's GA module: a bench-only tag, so the image the
# tests use is never changed.
GA_IMAGE = IMAGE + ("-ga" if ":" in IMAGE.rsplit("/", 1)[-1] else ":ga")
GA_DOCKERFILE = f"""FROM {IMAGE}
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \\
    --no-install-recommends libpam-google-authenticator >/dev/null && \\
    rm -rf /var/lib/apt/lists/*
"""

# sshd names its PAM service after its own program name (OpenSSH's
# SSHD_PAM_SERVICE is __progname; Debian 12's 9.2p1 has no PAMServiceName),
# so a symlink called sshd-classic runs /etc/pam.d/sshd-classic.
CLASSIC_SERVICE = "sshd-classic"
CLASSIC_AUTH = ["auth       required     pam_unix.so",
                "auth       required     pam_google_authenticator.so"]
DEBIAN_DEFAULT_COST = 5  # common-password: `pam_unix.so obscure yescrypt`, no rounds=
PROMPTS = {"ours": "Directory password: ", "classic": "Password: "}
CODE_PROMPT = "Verification code: "
PHASES = ("total", "to password prompt", "password -> code prompt", "code -> exit")
SPLIT_NOTE = ("split: ours asks for the code before it checks the password (a refusal reveals "
              "nothing), so its argon2id is in code -> exit; the classic password -> code prompt "
              "holds pam_unix's yescrypt, computed twice per check (Linux-PAM 1.5.2: "
              "x_strdup(crypt_r(...)) is a macro that evaluates crypt_r twice)")


def classic_pam() -> str:
    """Our packaging/pam.d/sshd with pam_jctotp's auth line replaced by the
    classic pair and its account line dropped: the account and session stacks
    stay the same as ours, line for line."""
    lines = [f"# /etc/pam.d/{CLASSIC_SERVICE} (bench/ssh_login.py): pam_unix + GA"]
    for line in (REPO / "packaging/pam.d/sshd").read_text().splitlines():
        words = line.split()
        if line.startswith("#"):
            continue
        if "pam_jctotp.so" not in words:
            lines.append(line)
        elif words[0] == "auth":
            lines += CLASSIC_AUTH
    return "\n".join(lines) + "\n"


# Scripts run by the container's python3. libxcrypt's crypt and crypt_gensalt
# (Debian 12's libcrypt.so.1), as pam_unix and passwd use them.
LIBCRYPT = r'''
import ctypes
lib = ctypes.CDLL("libcrypt.so.1")
lib.crypt_gensalt.restype = ctypes.c_char_p
lib.crypt_gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int]
lib.crypt.restype = ctypes.c_char_p
lib.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
'''

# Run inside the container as root. Ours: `jctotp user add --mfa` (the daemon
# hashes the password with argon2id and makes the Linux account). Classic:
# the same useradd, a yescrypt hash of the given cost set with chpasswd -e
# (what pam_unix's `yescrypt rounds=N` would write), ~/.google_authenticator.
SETUP_USERS = LIBCRYPT + r'''
import json, os, pwd, re, subprocess, sys
secrets, shadow = {}, []
for u in json.load(sys.stdin):
    if u["kind"] == "ours":
        out = subprocess.run(["jctotp", "user", "add", u["name"], "--password-stdin", "--mfa"],
                             input=u["password"] + "\n", text=True, capture_output=True, check=True)
        secrets[u["name"]] = re.search(r"secret=([A-Z2-7]+)", out.stdout).group(1)
        continue
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", u["name"]], check=True)
    salt = lib.crypt_gensalt(b"$y$", u["cost"], None, 0)
    shadow.append(u["name"] + ":" + lib.crypt(u["password"].encode(), salt).decode())
    pw = pwd.getpwnam(u["name"])
    path = os.path.join(pw.pw_dir, ".google_authenticator")
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400), "w") as fh:
        fh.write(u["ga"])
    os.chown(path, pw.pw_uid, pw.pw_gid)
if shadow:
    subprocess.run(["chpasswd", "-e"], input="\n".join(shadow) + "\n", text=True, check=True)
print(json.dumps(secrets))
'''

# The hashes' own cost, measured in the container: argon2id at the daemon's
# defaults, yescrypt at each cost, in interleaved rounds; the fastest of `reps`
# (the machine is shared: the fastest is the closest to the work itself).
HASH_TIMES = LIBCRYPT + r'''
import json, sys, time
import argon2
from pam_jctotp.config import PasswordHashParams
costs, reps = json.loads(sys.argv[1]), int(sys.argv[2])
p = PasswordHashParams()
ph = argon2.PasswordHasher(time_cost=p.time_cost, memory_cost=p.memory_kib,
                           parallelism=p.parallelism)
h = ph.hash("bench")
checks = {"argon2id": lambda: ph.verify(h, "bench")}
prefixes = {}
for c in costs:
    y = lib.crypt(b"bench", lib.crypt_gensalt(b"$y$", c, None, 0))
    prefixes[str(c)] = y[:7].decode()
    checks[str(c)] = lambda y=y: lib.crypt(b"bench", y)
best = {k: float("inf") for k in checks}
for _ in range(reps):
    for k, f in checks.items():
        t = time.perf_counter(); f(); best[k] = min(best[k], time.perf_counter() - t)
out = {"argon2id": {"memory_kib": p.memory_kib, "time_cost": p.time_cost,
                    "parallelism": p.parallelism, "seconds": best["argon2id"]}}
out.update({c: {"prefix": prefixes[c], "seconds": best[c]} for c in prefixes})
print(json.dumps(out))
'''


# --- the hashes' cost ---------------------------------------------------------------


def yescrypt_params(cost: int) -> tuple[int, int]:
    """(N, r) of libxcrypt's yescrypt at a cost (crypt-yescrypt.c: 1..11, default 5)."""
    return (1 << (cost + 9), 8) if cost < 3 else (1 << (cost + 7), 32)


def yescrypt_work(cost: int) -> tuple[float, float]:
    """(MiB, passes) of a yescrypt hash: 128*r*N bytes, filled once (SMix1)
    and then N/3 more block reads-and-writes (SMix2 at t=0, YESCRYPT_RW)."""
    n, r = yescrypt_params(cost)
    return 128 * r * n / 2**20, (n + -(-n // 3)) / n


def hash_costs(sshd: Sshd, costs: list[int], reps: int = 10) -> list[str]:
    """Lines saying, for each yescrypt cost, whether it is at least as costly
    to attack as our argon2id: no less memory and no fewer MiB x passes
    (memory-hard hashes cost an attacker memory x time)."""
    out = subprocess.run(["docker", "exec", sshd.container.id, "python3", "-c", HASH_TIMES,
                          json.dumps(costs), str(reps)],
                         capture_output=True, text=True, timeout=300, check=True)
    got = json.loads(out.stdout)
    a = got["argon2id"]
    a_mib, a_passes = a["memory_kib"] / 1024, a["time_cost"]

    def line(who: str, what: str, origin: str, mib: float, passes: float, seconds: float) -> str:
        return (f"  {who:8} {what:30} {origin:18} {mib:5.1f} MiB x {passes:.2f} = "
                f"{mib * passes:5.1f} MiB-passes {seconds * 1000:6.1f} ms")

    lines = [f"Password hashes (memory x passes: what an attacker pays per guess; "
             f"the time: one check in the container, fastest of {reps}):",
             line("ours", f"argon2id m={a['memory_kib']} t={a['time_cost']} p={a['parallelism']}",
                  "OWASP minimum", a_mib, a_passes, a["seconds"])]
    for c in costs:
        mib, passes = yescrypt_work(c)
        enough = mib >= a_mib and mib * passes >= a_mib * a_passes
        origin = "Debian 12 default" if c == DEBIAN_DEFAULT_COST else f"pam_unix rounds={c}"
        lines.append(line("classic", f"yescrypt cost {c} {got[str(c)]['prefix']}", origin, mib,
                          passes, got[str(c)]["seconds"])
                     + ("  at least as costly as ours" if enough else "  CHEAPER than ours"))
    return lines


# --- the stacks and their logins ----------------------------------------------------


@dataclass
class Stack:
    """One PAM stack behind one sshd port, with its fresh users (name, password, Totp)."""

    label: str
    sshd: Sshd
    prompt: str
    users: list[tuple[str, str, Totp]] = field(default_factory=list)
    times: dict[str, list[float]] = field(default_factory=lambda: {p: [] for p in PHASES})

    def login(self, record: bool) -> None:
        name, password, totp = self.users.pop()
        split = one_login(self.sshd, name, self.prompt, password, totp.fresh())
        if record:
            for phase, took in zip(PHASES, split, strict=True):
                self.times[phase].append(took)


def one_login(sshd: Sshd, name: str, prompt: str, password: str,
              code: str) -> tuple[float, float, float, float]:
    """Seconds: total, spawn -> password prompt, password -> code prompt,
    code -> EOF (pexpect's close() sleeps, so the clock stops at EOF and the
    exit status is checked after)."""
    start = time.perf_counter()
    child = sshd.ssh(name, "true")
    child.expect_exact(prompt)
    prompted = time.perf_counter()
    child.sendline(password)
    child.expect_exact(CODE_PROMPT)
    coded = time.perf_counter()
    child.sendline(code)
    child.expect(pexpect.EOF)
    end = time.perf_counter()
    child.close()
    if child.exitstatus != 0:
        sys.exit(f"ssh_login: {name}@{sshd.port} failed ({child.exitstatus}): {child.before!r}")
    return end - start, prompted - start, coded - prompted, end - coded


def make_users(sshd: Sshd, specs: list[dict[str, Any]]) -> dict[str, str]:
    """SETUP_USERS in the container; ours' secrets by name."""
    out = subprocess.run(["docker", "exec", "-i", sshd.container.id, "python3", "-c", SETUP_USERS],
                         input=json.dumps(specs), capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        sys.exit(f"ssh_login: making the users failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout)


def build_ga_image() -> None:
    """The test image (build_image), then GA_IMAGE on top of it."""
    build_image()
    out = subprocess.run(["docker", "build", "-q", "--network", "host", "-t", GA_IMAGE, "-"],
                         input=GA_DOCKERFILE, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"ssh_login: cannot build {GA_IMAGE}:\n{out.stderr[-2000:]}")


def start_classic(ours: Sshd) -> Sshd:
    """The classic sshd in the same container: same sshd_config, its own port
    and PAM service."""
    ours.ok(f"cat >/etc/pam.d/{CLASSIC_SERVICE}", stdin=classic_pam())
    port = free_port()
    ours.container.exec_run(
        ["sh", "-c", f"ln -sf /usr/sbin/sshd /usr/local/sbin/{CLASSIC_SERVICE} && "
                     f"exec /usr/local/sbin/{CLASSIC_SERVICE} -D -e "
                     f"-o ListenAddress=127.0.0.1:{port} -o PidFile=/run/{CLASSIC_SERVICE}.pid "
                     f">/var/log/{CLASSIC_SERVICE}.log 2>&1"], detach=True)
    classic = Sshd(ours.container, port)
    classic.wait_listening()
    return classic


def run(logins: int, warmup: int, costs: list[int] | None) -> tuple[list[Stack], list[str]]:
    """The measured logins; costs None: ours only. Returns the stacks and the
    hash-cost lines (empty for ours only). Ours and each classic stack
    alternate login by login, the order reversed every other round."""
    if costs is None:
        build_image()
        sshd = Sshd.start("password")
    else:
        build_ga_image()
        sshd = Sshd.start("password", image=GA_IMAGE)
    try:
        per = warmup + logins
        stacks = [Stack("ours", sshd, PROMPTS["ours"])]
        specs: list[dict[str, Any]] = [
            {"kind": "ours", "name": f"so{i}", "password": f"bench-pass-{i}"} for i in range(per)]
        ga_secrets: dict[str, str] = {}
        if costs is not None:
            classic = start_classic(sshd)
            for cost in costs:
                stacks.append(Stack(f"classic y{cost}", classic, PROMPTS["classic"]))
                for i in range(per):
                    name = f"sc{cost}n{i}"
                    ga_secrets[name] = pyotp.random_base32()
                    specs.append({"kind": "classic", "name": name, "cost": cost,
                                  "password": f"bench-pass-{i}",
                                  "ga": ga_secret_text(ga_secrets[name])})
        secrets = make_users(sshd, specs) | ga_secrets
        for spec in specs:
            stack = stacks[0] if spec["kind"] == "ours" else next(
                s for s in stacks if s.label == f"classic y{spec['cost']}")
            stack.users.append((spec["name"], spec["password"], Totp(secrets[spec["name"]])))
        hashes = hash_costs(sshd, costs) if costs is not None else []
        time.sleep(0.5)  # the daemon's last control request fully done
        for i in range(per):
            for stack in stacks if i % 2 == 0 else stacks[::-1]:
                stack.login(record=i >= warmup)
    finally:
        sshd.stop()
    return stacks, hashes


# --- printing -----------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def report(stacks: list[Stack], hashes: list[str], logins: int, warmup: int,
           load: tuple[float, float]) -> list[str]:
    names = [s.label for s in stacks]
    lines = [f"ssh login (password + code): host's ssh under pexpect -> sshd in "
             f"{GA_IMAGE if len(stacks) > 1 else IMAGE} (--network host, 127.0.0.1)",
             f"{os.cpu_count()} CPUs, load {load[0]:.1f} at the start, {load[1]:.1f} at the end, "
             f"{time.strftime('%Y-%m-%d %H:%M %Z')}",
             f"{logins} logins per stack, one fresh user per login, after {warmup} warm-up each"
             + (f"; interleaved login by login ({', '.join(names)}, then reversed)"
                if len(stacks) > 1 else "")]
    lines += hashes
    lines.append("")
    lines.append(f"  {'':32}" + "".join(f"{n:>12}" for n in names))
    rows: list[tuple[str, str, Callable[[list[float]], float]]] = [
        ("total", "median", statistics.median), ("total", "p95", lambda v: percentile(v, 95)),
        ("total", "min", min), ("total", "max", max)]
    rows += [(phase, "median", statistics.median) for phase in PHASES[1:]]
    for phase, stat, f in rows:
        lines.append(f"  {phase + ': ' + stat:32}"
                     + "".join(f"{ms(f(s.times[phase])):>12}" for s in stacks))
    total = stacks[0].times["total"]
    for s in stacks[1:]:
        theirs = s.times["total"]
        median = statistics.median(total) / statistics.median(theirs)
        p95 = percentile(total, 95) / percentile(theirs, 95)
        lines.append(f"  ours/{s.label}: median {median:.2f}×, p95 {p95:.2f}×")
    if len(stacks) > 1:
        lines.append(SPLIT_NOTE)
    return lines


def parse_costs(text: str) -> list[int]:
    costs = [int(c) for c in re.split(r"[,\s]+", text.strip()) if c]
    if not costs or any(not 1 <= c <= 11 for c in costs):
        raise argparse.ArgumentTypeError("yescrypt costs are 1..11")
    return costs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=20, help="timed logins per stack (default 20)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed logins per stack first")
    ap.add_argument("--classic", action="store_true",
                    help="also the pam_unix + google-authenticator stack, interleaved")
    ap.add_argument("--yescrypt-cost", type=parse_costs, default=[DEBIAN_DEFAULT_COST, 6],
                    help="the classic users' yescrypt costs, one classic stack each "
                         "(default 5,6: Debian 12's default, and the smallest cost no "
                         "cheaper to attack than argon2id at OWASP's minimum)")
    args = ap.parse_args()
    start_load = os.getloadavg()[0]
    stacks, hashes = run(args.n, args.warmup, args.yescrypt_cost if args.classic else None)
    print("\n".join(report(stacks, hashes, args.n, args.warmup,
                           (start_load, os.getloadavg()[0]))))


if __name__ == "__main__":
    main()
