"""Run the real setuid `su root -c 'echo SU-OK'` as USER on a pty, the way a
person types: PASSWORD at every "Password:", 000000 at any code prompt.
Prints the transcript and "EXIT n". Runs inside the test container."""

import os
import pty
import pwd
import select
import sys
import time

user, password = sys.argv[1], sys.argv[2]
account = pwd.getpwnam(user)
pid, fd = pty.fork()
if pid == 0:
    os.setgid(account.pw_gid)
    os.setuid(account.pw_uid)
    os.execvp("su", ["su", "root", "-c", "echo SU-OK"])
out, answered = b"", 0
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    ready, _, _ = select.select([fd], [], [], 0.5)
    if fd not in ready:
        continue
    try:
        data = os.read(fd, 1024)
    except OSError:  # EIO: su exited and closed the pty
        break
    if not data:
        break
    out += data
    if out.count(b"Password:") + out.count(b"code:") > answered:
        answer = password if out.rstrip().endswith(b"Password:") else "000000"
        os.write(fd, answer.encode() + b"\n")
        answered += 1
_, status = os.waitpid(pid, 0)
print(out.decode(errors="replace"))
print("EXIT", os.waitstatus_to_exitcode(status))
