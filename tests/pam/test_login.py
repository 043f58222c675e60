"""The real PAM stack: libpam loads the built shim, which talks to a real jctotpd.

Issue 3's core flows. Codes come from the user's secret and the clock
(pyotp); the daemon's clock is moved with a test-only offset where a test
needs a fresh time-step.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pamdriver as pd
import pytest
from pamdriver import service
from testlib import TEST_DATABASE, code_at

from pam_jctotp.core.login import PASSWORD_PROMPT

pytestmark = pytest.mark.pam

PASSWORD = "correct horse battery"


def login(confdir, svc, user, answers, **kw) -> pd.Result:
    return pd.run(confdir, svc, user, answers, **kw)


def prompts(result: pd.Result) -> list[str]:
    return [m.text for m in result.transcript if m.style.startswith("prompt")]


def test_password_and_code(daemon, confdir):
    totp = daemon.add_user("alice")
    svc = service(confdir, daemon)
    r = login(confdir, svc, "alice", [PASSWORD, code_at(totp)], call="both")
    assert r.rc == pd.PAM_SUCCESS, r
    assert prompts(r) == ["Directory password: ", "Verification code: "]
    assert [m.style for m in r.transcript] == ["prompt_off", "prompt_off"]


def test_wrong_password_is_refused_and_does_not_burn_the_code(daemon, confdir):
    totp = daemon.add_user("alice")
    svc = service(confdir, daemon)
    code = code_at(totp)
    assert login(confdir, svc, "alice", ["wrong password", code]).rc == pd.PAM_AUTH_ERR
    assert login(confdir, svc, "alice", [PASSWORD, code]).rc == pd.PAM_SUCCESS


def test_wrong_code_is_refused(daemon, confdir):
    totp = daemon.add_user("alice")
    svc = service(confdir, daemon)
    good = code_at(totp)
    wrong = f"{(int(good) + 1) % 1000000:06d}"
    r = login(confdir, svc, "alice", [PASSWORD, wrong])
    assert r.rc == pd.PAM_AUTH_ERR
    assert daemon.user("alice")["failed_attempts"] == 1


def test_replayed_code_is_refused(daemon, confdir):
    totp = daemon.add_user("alice")
    svc = service(confdir, daemon)
    code = code_at(totp)
    assert login(confdir, svc, "alice", [PASSWORD, code]).rc == pd.PAM_SUCCESS
    assert login(confdir, svc, "alice", [PASSWORD, code]).rc == pd.PAM_AUTH_ERR
    # an older step inside the window is a replay too
    older = code_at(totp, -30)
    assert login(confdir, svc, "alice", [PASSWORD, older]).rc == pd.PAM_AUTH_ERR
    assert any(e["event"] == "replay_refused" for e in daemon.audit_events())
    # the next time-step works again
    daemon.set_clock(30)
    assert login(confdir, svc, "alice", [PASSWORD, code_at(totp, 30)]).rc == pd.PAM_SUCCESS


def test_window_accepts_one_step_either_side_only(daemon, confdir):
    totp = daemon.add_user("alice")
    svc = service(confdir, daemon)
    assert login(confdir, svc, "alice", [PASSWORD, code_at(totp, -90)]).rc == pd.PAM_AUTH_ERR
    assert login(confdir, svc, "alice", [PASSWORD, code_at(totp, 30)]).rc == pd.PAM_SUCCESS


def test_recovery_code_works_once(daemon, confdir):
    data = daemon.ok("user.add", name="rita", password=PASSWORD, mfa=True, system_account=False)
    svc = service(confdir, daemon)
    rc1 = data["recovery_codes"][0]
    assert login(confdir, svc, "rita", [PASSWORD, rc1]).rc == pd.PAM_SUCCESS
    assert login(confdir, svc, "rita", [PASSWORD, rc1]).rc == pd.PAM_AUTH_ERR
    assert daemon.user("rita")["recovery_codes_left"] == len(data["recovery_codes"]) - 1


def test_unknown_user_gets_the_same_prompts_and_fails(daemon, confdir):
    """Issue 9 item 8: an unknown name looks like a user of the default state
    (`jctotp user add`: MFA off): one prompt, not two."""
    daemon.add_user("paula", mfa=False)
    svc = service(confdir, daemon)
    known = login(confdir, svc, "paula", ["wrong password"])
    unknown = login(confdir, svc, "mallory", ["wrong password"])
    assert unknown.rc == pd.PAM_AUTH_ERR == known.rc
    assert prompts(unknown) == prompts(known) == [PASSWORD_PROMPT]
    assert [m.text for m in unknown.transcript] == [m.text for m in known.transcript]


def test_unknown_user_looks_enrolled_where_mfa_is_required_for_all(make_daemon, confdir):
    daemon = make_daemon(require_mfa_for_all=True)
    totp = daemon.add_user("alice")
    svc = service(confdir, daemon)
    known = login(
        confdir, svc, "alice", [PASSWORD, "000000" if code_at(totp) != "000000" else "111111"]
    )
    unknown = login(confdir, svc, "mallory", [PASSWORD, "123456"])
    assert unknown.rc == pd.PAM_AUTH_ERR == known.rc
    assert prompts(unknown) == prompts(known) == [PASSWORD_PROMPT, "Verification code: "]


def test_user_without_mfa_logs_in_with_password_alone(daemon, confdir):
    daemon.add_user("paula", mfa=False)
    svc = service(confdir, daemon)
    r = login(confdir, svc, "paula", [PASSWORD], call="both")
    assert r.rc == pd.PAM_SUCCESS
    assert prompts(r) == ["Directory password: "]
    assert login(confdir, svc, "paula", ["nope"]).rc == pd.PAM_AUTH_ERR


def test_factors_totp_with_use_first_pass_after_an_earlier_module(daemon, confdir):
    """pam_unix-style stacking: an earlier module (pam_exec expose_authtok) asked
    for the password and set PAM_AUTHTOK; we verify it and ask only the code."""
    totp = daemon.add_user("alice")
    svc = service(confdir, daemon, "use_first_pass")
    r = login(confdir, svc, "alice", [code_at(totp)], authtok=PASSWORD)
    assert r.rc == pd.PAM_SUCCESS, r
    assert prompts(r) == ["Verification code: "]
    daemon.set_clock(30)
    assert login(confdir, svc, "alice", [code_at(totp, 30)], authtok="wrong").rc == pd.PAM_AUTH_ERR


def test_factors_totp_asks_only_the_code(daemon, confdir):
    totp = daemon.add_user("alice")
    svc = service(confdir, daemon, "factors=totp")
    r = login(confdir, svc, "alice", [code_at(totp)])
    assert r.rc == pd.PAM_SUCCESS
    assert prompts(r) == ["Verification code: "]
    daemon.set_clock(60)
    assert (
        login(confdir, svc, "alice", ["000000" if code_at(totp, 60) != "000000" else "111111"]).rc
        == pd.PAM_AUTH_ERR
    )


def test_factors_totp_user_without_mfa_gets_no_opinion(daemon, confdir):
    """IGNORE, never SUCCESS: a `sufficient` line cannot become a bypass."""
    daemon.add_user("paula", mfa=False)
    svc = "ignore-test"
    pd.write_service(
        confdir,
        svc,
        [
            f"auth sufficient {pd.SHIM} socket={daemon.pam_socket} factors=totp",
            "auth required pam_deny.so",
        ],
    )
    assert login(confdir, svc, "paula", []).rc == pd.PAM_AUTH_ERR


def test_daemon_not_running_fails_closed_within_the_timeout(daemon, confdir):
    daemon.add_user("alice")
    svc = service(confdir, daemon)
    daemon.stop()
    r = login(confdir, svc, "alice", [PASSWORD, "123456"])
    assert r.rc == pd.PAM_AUTHINFO_UNAVAIL
    assert r.elapsed < 5


def test_daemon_killed_mid_login_fails_closed(daemon, confdir):
    daemon.add_user("alice")
    svc = service(confdir, daemon)

    def answer(message, transcript):
        if message.text == "Verification code: ":
            daemon.kill()
        return "123456" if "code" in message.text else PASSWORD

    r = login(confdir, svc, "alice", answer)
    assert r.rc == pd.PAM_AUTHINFO_UNAVAIL


def test_a_slow_login_does_not_hold_up_another(make_daemon, confdir):
    daemon = make_daemon(fail_delay=2.0)
    totp = daemon.add_user("alice")
    daemon.add_user("bob", mfa=False)
    svc = service(confdir, daemon)
    slow: dict[str, pd.Result] = {}
    started = time.monotonic()
    t = threading.Thread(
        target=lambda: slow.update(r=login(confdir, svc, "alice", ["wrong", code_at(totp)]))
    )
    t.start()
    time.sleep(0.3)  # the first login is now inside its 2 s failure delay
    fast = login(confdir, svc, "bob", [PASSWORD])
    fast_done = time.monotonic() - started
    t.join()
    assert fast.rc == pd.PAM_SUCCESS
    assert slow["r"].rc == pd.PAM_AUTH_ERR
    assert slow["r"].elapsed >= 2.0
    assert fast_done < slow["r"].elapsed  # finished while the first still waited


def test_acct_mgmt_for_a_healthy_user_succeeds(daemon, confdir):
    daemon.add_user("alice")
    svc = service(confdir, daemon)
    assert login(confdir, svc, "alice", [], call="acct").rc == pd.PAM_SUCCESS
    assert login(confdir, svc, "nobody-here", [], call="acct").rc == pd.PAM_USER_UNKNOWN


@pytest.mark.skipif(TEST_DATABASE != "sqlite", reason="reads the hash from the SQLite file")
def test_passwords_are_hashed_with_the_configured_argon2id_parameters(make_daemon):
    """The test suite's daemons hash at 1 MiB and one pass (testing.fast_password_hash);
    without it a daemon hashes with password_hash: OWASP's floor by default, or more."""
    def stored(daemon) -> str:
        daemon.add_user("alice")
        db = sqlite3.connect(Path(daemon.config["state_dir"]) / "jctotp.db")
        try:
            return db.execute("SELECT password_hash FROM users").fetchone()[0]
        finally:
            db.close()
    assert stored(make_daemon()).startswith("$argon2id$v=19$m=1024,t=1,p=1$")
    production = make_daemon(testing={"clock_control": True})
    assert stored(production).startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    stronger = make_daemon(password_hash={"memory_kib": 65536, "time_cost": 3})
    assert stored(stronger).startswith("$argon2id$v=19$m=65536,t=3,p=1$")
