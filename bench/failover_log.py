"""
The log observer bench/failover.py gives twistd (C{--logger failover_log.observer}): twistd's
own format, with microseconds in the time, so that the run's timeline can place each line.
"""

from __future__ import annotations

import sys

from twisted.logger import ILogObserver, textFileLogObserver


def observer() -> ILogObserver:
    """
    Write each event to standard output as twistd does, the time to the microsecond.
    """
    return textFileLogObserver(sys.__stdout__, timeFormat="%Y-%m-%dT%H:%M:%S.%f%z")
