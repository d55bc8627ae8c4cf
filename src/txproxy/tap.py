# -*- test-case-name: tests.test_tap -*-
"""
The C{twistd txproxy} command line: options, the default configuration, and the service.
"""

from __future__ import annotations

import select
import signal
import sys
from collections.abc import Callable, Sequence
from importlib.resources import files
from typing import TYPE_CHECKING, cast

from twisted.application.service import IService, Service
from twisted.internet.interfaces import IReactorFromThreads
from twisted.logger import Logger
from twisted.python import usage

from txproxy.check import check
from txproxy.config import InvalidConfiguration, load
from txproxy.interfaces import IProxyReactor
from txproxy.tls import certificate_errors

if TYPE_CHECKING:
    from txproxy.service import ProxyService


def default_config_path() -> str:
    """
    The installed copy of C{etc/txproxy.py}: the demo that runs with no file given.
    """
    return str(files("txproxy").joinpath("defaults", "txproxy.py"))


class Options(usage.Options):
    """
    Options of C{twistd txproxy}.
    """

    synopsis = "[--config FILE] [--check]"
    longdesc = (
        "Run a reverse proxy and load balancer from a Python configuration file. "
        "With no --config, run the demo configuration (etc/txproxy.py)."
    )
    optParameters = [
        ["config", "c", None, "The configuration file (default: the demo configuration)."],
    ]
    optFlags = [
        ["check", None, "Validate the configuration, print every error, and exit (0: valid)."],
    ]

    def postOptions(self) -> None:
        path = self["config"] or default_config_path()
        self["config"] = path
        if self["check"]:
            raise SystemExit(check(path, sys.stdout))
        try:
            self["proxy"] = load(path)
        except InvalidConfiguration as invalid:
            raise usage.UsageError(f"invalid configuration:\n{invalid}") from None
        errors = certificate_errors(self["proxy"])
        if errors:
            listed = "\n".join(str(error) for error in errors)
            raise usage.UsageError(f"unusable TLS files:\n{listed}")


class FileReload:
    """
    Reloads a running proxy from its configuration file, as C{SIGHUP} asks.

    The file is loaded and checked as at start-up, TLS files included. A bad
    file is refused: each error is logged (C{file:line: call: field:
    message}, or C{file: reason} for a TLS file) and the running
    configuration stays. A good one is given to L{ProxyService.reload},
    which applies what differs and reads the certificates of the TLS
    listeners kept again.

    @ivar path: the configuration file.
    @ivar root: the running proxy.
    """

    _log = Logger()

    def __init__(self, path: str, root: ProxyService) -> None:
        self.path = path
        self.root = root

    def __call__(self) -> bool:
        """
        Reload once.

        @return: whether the new configuration was taken.
        """
        from txproxy.service import ReloadRefused

        self._log.info("reloading {path}", path=self.path)
        try:
            proxy = load(self.path)
        except InvalidConfiguration as invalid:
            return self._refused([str(error) for error in invalid.errors])
        unusable = certificate_errors(proxy)
        if unusable:
            return self._refused([str(error) for error in unusable])
        try:
            self.root.reload(proxy)
        except ReloadRefused as refused:
            return self._refused(refused.errors)
        except Exception:
            # A bug of txproxy's, not the file's: say so, and keep running.
            self._log.failure("reload of {path} failed", path=self.path)
            return False
        return True

    def _refused(self, errors: Sequence[str]) -> bool:
        """
        Log why a reload is refused.

        @return: L{False}: not reloaded.
        """
        for error in errors:
            self._log.error("reload refused: {error}", error=error, path=self.path)
        self._log.error(
            "reload of {path} refused ({count} error(s)): the running configuration stays",
            path=self.path,
            count=len(errors),
        )
        return False


class HangupReloads(Service):
    """
    Calls C{reload} on the reactor's thread each time the process gets
    C{SIGHUP}, while running; the signal's previous handler is put back on stop.

    Only the C{twistd txproxy} process installs it: a library must not take
    a signal from the program that uses it.

    @ivar reload: what a C{SIGHUP} calls.
    """

    def __init__(self, reactor: IReactorFromThreads, reload: Callable[[], object]) -> None:
        self._reactor = reactor
        self.reload = reload
        self._previous: object = None

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self._previous = signal.signal(signal.SIGHUP, self._hangup)

    def _hangup(self, signum: int, frame: object) -> None:
        self._reactor.callFromThread(self.reload)

    def stopService(self) -> None:
        super().stopService()  # type: ignore[no-untyped-call]
        signal.signal(signal.SIGHUP, self._previous)  # type: ignore[arg-type]


def install_reactor() -> None:
    """
    Install L{txproxy.reactor.ProxyReactor} where epoll is, unless a reactor
    is installed already (C{twistd -r NAME} installs the one named).
    """
    if "twisted.internet.reactor" in sys.modules or not hasattr(select, "epoll"):
        return
    from txproxy.reactor import install

    install()


def makeService(options: Options) -> IService:
    """
    Build the service tree for the loaded configuration on the global
    reactor, reloading the configuration file on C{SIGHUP} (see L{FileReload}).
    """
    install_reactor()
    from twisted.internet import reactor

    from txproxy import service

    root = service.makeService(options["proxy"], cast(IProxyReactor, reactor))
    reload = FileReload(options["config"], root)
    hangup = HangupReloads(cast(IReactorFromThreads, reactor), reload)
    hangup.setServiceParent(root)  # type: ignore[no-untyped-call]
    return root
