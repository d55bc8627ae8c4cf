"""
The reactor C{twistd txproxy} runs on when none was chosen: Twisted's epoll
reactor, handing each I/O event straight to its connection.

Twisted's L{EPollReactor} calls every C{doRead} and C{doWrite} through
L{twisted.python.log.callWithLogger}, which asks the connection for its log
prefix and pushes it as the legacy log context (C{system}) around the call.
A proxy handles four such events a request, and that wrapping cost about a
tenth of txproxy's CPU a request under load (C{bench/RESULTS.md}); txproxy
logs through L{twisted.logger}, whose events carry their namespace instead
and never read that context. L{ProxyReactor} is the same reactor without it:
an exception escaping an event is still logged, and the reactor goes on.

C{twistd -r epoll txproxy} (or any other reactor) still runs on Twisted's own.
"""

from __future__ import annotations

import errno

from twisted.internet.epollreactor import EPollReactor
from twisted.internet.main import installReactor
from twisted.logger import Logger


class ProxyReactor(EPollReactor):
    """
    L{EPollReactor}, dispatching I/O events without a legacy log context.
    """

    _log = Logger()

    def doPoll(self, timeout: float | None) -> None:
        """
        Poll for I/O events and hand each to its connection.
        """
        try:
            events = self._poller.poll(-1 if timeout is None else timeout, len(self._selectables))
        except OSError as error:
            # As EPollReactor does: a signal may interrupt the wait; any other
            # error is a bug to be seen.
            if error.errno == errno.EINTR:
                return
            raise
        selectables = self._selectables
        dispatch = self._doReadOrWrite
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is None:
                continue
            try:
                dispatch(selectable, fd, event)  # type: ignore[no-untyped-call]
            except KeyboardInterrupt:
                raise
            except BaseException:
                # _doReadOrWrite logs and disconnects for doRead and doWrite
                # itself; this is a connectionLost that raised.
                self._log.failure(
                    "error handling an event on {selectable!r}", selectable=selectable
                )

    doIteration = doPoll


def install() -> ProxyReactor:
    """
    Install a L{ProxyReactor} as the global reactor.

    @raise twisted.internet.error.ReactorAlreadyInstalledError: if another
        reactor was installed first.
    """
    reactor = ProxyReactor()  # type: ignore[no-untyped-call]
    installReactor(reactor)  # type: ignore[no-untyped-call]
    return reactor
