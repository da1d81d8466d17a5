"""Named crash points: a test makes the real bot SIGKILL itself at one exact step.

The restart tests need a crash *between* two statements (after the alert claims, after the
n-th alert is recorded, after a send but before its record), which a kill from outside only
hits by luck. With ``APPEALWATCH_CRASH_AT=<point>[:<n>]`` in the bot's environment, the n-th
time (default the first) the code passes ``crash_point("<point>")`` the process kills itself
with SIGKILL: no cleanup, no flush, like a power cut. Without the variable (always, outside
tests) a crash point costs one comparison.

Points: ``alert_claimed`` (a fan-out's claims are committed, nothing sent), ``alert_sent`` (a
send returned, its outcome not yet recorded), ``alert_recorded`` (an outcome was recorded),
``worker_scored`` (a worker classified its batch and wrote nothing).
"""

from __future__ import annotations

import logging
import os
import signal

ENV = "APPEALWATCH_CRASH_AT"
POINTS = ("alert_claimed", "alert_sent", "alert_recorded", "worker_scored")

log = logging.getLogger(__name__)


def _parse(value: str | None) -> tuple[str, int] | None:
    if not value:
        return None
    name, _, count = value.partition(":")
    if name not in POINTS:
        raise ValueError(f"{ENV}={value!r}: unknown crash point (known: {', '.join(POINTS)})")
    return name, int(count or 1)


_TARGET = _parse(os.environ.get(ENV))
_hits = 0


def crash_point(name: str) -> None:
    """Die here if the environment asked for it (tests only)."""
    global _hits
    if _TARGET is None or _TARGET[0] != name:
        return
    _hits += 1
    if _hits >= _TARGET[1]:
        log.warning("crash point %s reached (%d): SIGKILL", name, _hits)
        os.kill(os.getpid(), signal.SIGKILL)
