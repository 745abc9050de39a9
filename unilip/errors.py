"""The exit-code contract of every ``unilip`` command, and the exceptions the command line maps onto it.

=====  =====================================================================================
code   meaning
=====  =====================================================================================
0      success
1      the work was done, but part of it failed or is unfinished, or a check says FAIL (the commands
       that plug-ins add say which of theirs: failed items, unfinished shards, a failed gate)
2      usage error, refused request (another run's directory, a locked directory ...), or I/O
       error (a missing or unreadable file, a full disk): one line on stderr naming the problem
       and the fix
3      internal error: a bug; the traceback is printed (please report it)
130    interrupted (Ctrl-C / SIGINT): what was finished is kept; the same command resumes
=====  =====================================================================================

Library code raises; only ``unilip.cli.main`` turns exceptions into codes, so the mapping is in one place.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with what had been finished: ``"100/1500 items finished and kept"``.

    The command line prints ``interrupted: MESSAGE; run the same command to resume`` and exits 130.
    It is a ``KeyboardInterrupt`` so that code which only knows about Ctrl-C treats it as one.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message
