"""Kills the ranks' process groups when ``loopstack train``'s launcher dies without saying it is done.

A rank dies with the launcher by ``PR_SET_PDEATHSIG``, but what the rank
started (a data-loading worker, a helper) only gets that signal for its own
parent, the rank. This process outlives a SIGKILLed launcher: it reads the
ranks' group ids from its stdin, one per line (``forget <id>`` once a group is
empty, so that a reused id is never killed), and the kernel closes that pipe
when the launcher dies, however it dies. End of input without a ``done`` line
means the launcher is gone, and every group gets SIGKILL.

It runs as a file, not a module, so that it starts without importing loopstack.
"""

import os
import signal
import sys


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the terminal's Ctrl-C is the launcher's to forward
    groups: set[int] = set()
    for line in sys.stdin:
        word = line.strip()
        if word == "done":
            return
        if word.startswith("forget "):  # that rank's group is empty: its id may go to an unrelated process
            groups.discard(int(word.split()[1]))
        else:
            groups.add(int(word))
    for group in groups:
        try:
            os.killpg(group, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):  # the group is empty: all of it exited already
            pass


if __name__ == "__main__":
    main()
