"""Run ``coercion serve`` and profile, on demand, the threads that serve associations.

``python -m cProfile`` profiles the main thread only, and the main thread of ``coercion
serve`` just waits for a signal: pynetdicom accepts a connection in a request thread, decodes
PDUs in a DUL thread and calls the C-STORE handler in an association thread. This wrapper
starts a :class:`cProfile.Profile` in every thread that starts after it receives SIGUSR1
(``threading.setprofile``), timed with :func:`time.thread_time` so that a thread blocked in
``select()`` or on a queue costs nothing. Start-up, readiness checks and warm-up traffic
before the signal are not profiled. On SIGUSR1 it creates ``OUT.ready`` (so the caller
knows profiling is on); when the node has stopped (SIGTERM) it writes the statistics of all
profiled threads, merged, to ``OUT`` for :mod:`pstats`.

Usage::

    python benchmarks/_profile_serve.py OUT.prof serve --port PORT --data DIR --key KEY ...
"""

from __future__ import annotations

import cProfile
import pstats
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from coercion.cli.main import main as coercion_main


def main(argv: list[str]) -> int:
    """Run the coercion CLI with ``argv[1:]``; profile new threads after SIGUSR1."""
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    out, args = Path(argv[0]), argv[1:]
    profiles: list[cProfile.Profile] = []
    lock = threading.Lock()
    collecting = threading.Event()

    def start_in_thread(_frame: FrameType, _event: str, _arg: Any) -> None:
        # The first profile event of a new thread: replace this hook for the rest of the
        # thread's life, with a C-level profiler or (before SIGUSR1) with nothing.
        if not collecting.is_set():
            sys.setprofile(None)
            return
        profile = cProfile.Profile(time.thread_time)
        with lock:
            profiles.append(profile)
        profile.enable()

    def start_collecting(_signum: int, _frame: FrameType | None) -> None:
        collecting.set()
        out.with_name(out.name + ".ready").touch()

    signal.signal(signal.SIGUSR1, start_collecting)
    threading.setprofile(start_in_thread)
    try:
        coercion_main(args)
    finally:
        threading.setprofile(None)
        with lock:
            if profiles:
                stats = pstats.Stats(profiles[0])
                for profile in profiles[1:]:
                    stats.add(profile)
                stats.dump_stats(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
