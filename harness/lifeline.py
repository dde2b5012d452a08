"""Process utilities at the bottom of the layering: nothing in evalq is imported here."""
from __future__ import annotations

import os

# A worker announces each phase on stdout as a line starting with this; the parent strips them from the log.
PHASE_PREFIX = "@@evalq phase="


def die_with_parent(parent_pid: int | None) -> None:
    """Ask Linux to SIGKILL this process when its parent dies: a killed
    orchestrator must not leave workers holding a GPU. No-op elsewhere."""
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if parent_pid and os.getppid() != parent_pid:  # the parent died before prctl
        os._exit(1)
