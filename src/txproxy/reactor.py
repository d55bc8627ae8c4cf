"""
The reactor C{twistd txproxy} runs on when none was chosen: Twisted's epoll
reactor, with two costs of a proxied request taken out.

 1. Twisted's L{EPollReactor} calls every C{doRead} and C{doWrite} through
    L{twisted.python.log.callWithLogger}, which asks the connection for its
    log prefix and pushes it as the legacy log context (C{system}) around the
    call. A proxy handles several such events a request, and that wrapping
    cost about a tenth of txproxy's CPU a request under load
    (C{bench/RESULTS.md}); txproxy logs through L{twisted.logger}, whose
    events carry their namespace instead and never read that context.
    L{ProxyReactor} hands each event straight to its connection: an
    exception escaping one is still logged, and the reactor goes on.

 2. A C{transport.write} asks the reactor to watch the socket for
    writability: C{epoll_ctl} to add it, a turn of the loop for the event,
    C{send}, and C{epoll_ctl} to stop watching. L{ProxyReactor} instead
    keeps the writers that asked during a turn and, once that turn's events
    are handled, lets each write what it can straight away; only one that
    could not send everything is watched by epoll until it can. Writes
    still leave in batches after the reads that caused them, as before, and
    a request costs four fewer system calls.

C{twistd -r epoll txproxy} (or any other reactor) still runs on Twisted's own.
"""

from __future__ import annotations

import errno
from select import EPOLLOUT
from typing import Any

from twisted.internet.epollreactor import EPollReactor
from twisted.internet.interfaces import IWriteDescriptor
from twisted.internet.main import installReactor
from twisted.logger import Logger


class ProxyReactor(EPollReactor):
    """
    L{EPollReactor}, dispatching I/O events without a legacy log context and
    writing without waiting for epoll where the socket takes the bytes.

    @ivar _pending: the writers that asked to write during this turn, to
        write once its events are handled.
    @ivar _flushing: the writers of the previous turn not yet written.
    @ivar _writing: the writer writing now, and C{_wrote_all} whether it said
        it has nothing more to write.
    """

    _log = Logger()

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._pending: dict[IWriteDescriptor, None] = {}
        self._flushing: dict[IWriteDescriptor, None] = {}
        self._writing: IWriteDescriptor | None = None
        self._wrote_all = False

    def addWriter(self, writer: IWriteDescriptor) -> None:
        """
        Write for C{writer} at the end of this turn, unless epoll already
        watches it.
        """
        if writer in self._pending or writer.fileno() in self._writes:
            return
        self._pending[writer] = None

    def removeWriter(self, writer: IWriteDescriptor) -> None:
        """
        Stop writing for C{writer}, whether it waits for the end of the turn
        or for epoll.
        """
        if writer is self._writing:
            # It came from _pending, so epoll does not watch it: nothing to undo there.
            self._wrote_all = True
            self._pending.pop(writer, None)
        elif writer in self._pending:
            del self._pending[writer]
        elif writer in self._flushing:
            del self._flushing[writer]
        else:
            super().removeWriter(writer)  # type: ignore[no-untyped-call]

    def getWriters(self) -> list[IWriteDescriptor]:
        writers: list[IWriteDescriptor] = super().getWriters()  # type: ignore[no-untyped-call]
        return writers + list(self._flushing) + list(self._pending)

    def removeAll(self) -> list[Any]:
        waiting = list(self._flushing) + list(self._pending)
        self._flushing = {}
        self._pending = {}
        removed: list[Any] = super().removeAll()  # type: ignore[no-untyped-call]
        return removed + [writer for writer in waiting if writer not in removed]

    def doPoll(self, timeout: float | None) -> None:
        """
        Poll for I/O events and hand each to its connection; then write for
        the writers that asked to.
        """
        if self._pending:
            # Writes asked for by timed calls: do not wait for events first.
            timeout = 0
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
                    "error handling an event on {selectable!r}", None, selectable=selectable
                )
        if self._pending:
            self._flush()

    doIteration = doPoll

    def _flush(self) -> None:
        """
        Let each writer of this turn write what the socket takes; watch those
        left with bytes to send. A writer that asks again while this runs
        (a producer resumed) writes at the end of the next turn.
        """
        flushing = self._flushing = self._pending
        self._pending = {}
        dispatch = self._doReadOrWrite
        try:
            while flushing:
                writer = next(iter(flushing))
                del flushing[writer]
                self._writing = writer
                self._wrote_all = False
                try:
                    dispatch(writer, writer.fileno(), EPOLLOUT)  # type: ignore[no-untyped-call]
                except KeyboardInterrupt:
                    raise
                except BaseException:
                    self._log.failure("error writing for {writer!r}", None, writer=writer)
                    continue
                if not self._wrote_all and writer not in self._pending:
                    # The socket took less than all: wait until it takes more.
                    super().addWriter(writer)  # type: ignore[no-untyped-call]
        finally:
            self._writing = None
            if flushing:
                # Interrupted: the writers not reached write at the end of the next turn.
                self._pending.update(flushing)
                flushing.clear()


def install() -> ProxyReactor:
    """
    Install a L{ProxyReactor} as the global reactor.

    @raise twisted.internet.error.ReactorAlreadyInstalledError: if another
        reactor was installed first.
    """
    reactor = ProxyReactor()
    installReactor(reactor)  # type: ignore[no-untyped-call]
    return reactor
