"""Leave PAM conversations at their first prompt, as people who never answer (a helper
process for the tests, so that it can run PAM as another real uid, as su does).

    python stall.py CONFDIR SERVICE [--ruid UID] RHOST:COUNT [RHOST:COUNT ...]

Conversations start one after another, each once the one before it shows its
prompt (or ended), so the daemon parks them in this order; RHOST "none" leaves
PAM_RHOST unset. Names are ghost0, ghost1, ... (unknown to the daemon). Then
it prints `ready N` (N: how many showed a prompt) and reads commands:
`answer I TEXT` answers conversation I and prints `result I PAM_NAME`; `quit`
ends every other conversation (the conversation fails) and exits.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time

import pamdriver as pd

STEP_WAIT = 10.0   # one conversation's prompt, at most


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("confdir")
    parser.add_argument("service")
    parser.add_argument("--ruid", type=int)
    parser.add_argument("groups", nargs="+")
    args = parser.parse_args()
    if args.ruid is not None:
        os.setresuid(args.ruid, 0, 0)   # su's shape: the user's real uid, effective root
    rhosts = []
    for group in args.groups:
        rhost, _, count = group.rpartition(":")
        rhosts += [None if rhost == "none" else rhost] * int(count)
    n = len(rhosts)
    prompted = [threading.Event() for _ in range(n)]
    go = [threading.Event() for _ in range(n)]
    answers: list[str | None] = [None] * n
    results: list[pd.Result | None] = [None] * n

    def one(i: int) -> None:
        def reply(message: pd.Message, transcript: list[pd.Message]) -> str | None:
            prompted[i].set()
            go[i].wait(600)
            return answers[i]
        results[i] = pd.run(args.confdir, args.service, f"ghost{i}", reply, rhost=rhosts[i])

    threading.stack_size(256 * 1024)
    threads = []
    for i in range(n):
        t = threading.Thread(target=one, args=(i,), daemon=True)
        t.start()
        threads.append(t)
        end = time.monotonic() + STEP_WAIT
        while not prompted[i].wait(0.005) and t.is_alive() and time.monotonic() < end:
            pass
    print("ready", sum(e.is_set() for e in prompted), flush=True)
    for line in sys.stdin:
        verb, _, rest = line.strip().partition(" ")
        if verb == "answer":
            index, _, text = rest.partition(" ")
            i = int(index)
            answers[i] = text
            go[i].set()
            threads[i].join(60)
            result = results[i]
            print("result", i, result.name if result else "none", flush=True)
        elif verb == "quit":
            break
    for event in go:
        event.set()
    for t in threads:
        t.join(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
