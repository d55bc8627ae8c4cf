# -*- test-case-name: tests.test_tap -*-
"""
The C{twistd txproxy} command line: options, the default configuration, and the service.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from importlib.resources import files
from typing import cast

from twisted.application.service import IService, Service
from twisted.internet.interfaces import IReactorFromThreads
from twisted.python import usage

from txproxy.check import check
from txproxy.config import InvalidConfiguration, load
from txproxy.interfaces import IProxyReactor
from txproxy.tls import certificate_errors


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


class HangupReloads(Service):
    """
    Calls C{reload} on the reactor's thread each time the process gets
    C{SIGHUP}, while running; the signal's previous handler is put back on stop.

    Only the C{twistd txproxy} process installs it: a library must not take
    a signal from the program that uses it.
    """

    def __init__(self, reactor: IReactorFromThreads, reload: Callable[[], object]) -> None:
        self._reactor = reactor
        self._reload = reload
        self._previous: object = None

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self._previous = signal.signal(signal.SIGHUP, self._hangup)

    def _hangup(self, signum: int, frame: object) -> None:
        self._reactor.callFromThread(self._reload)

    def stopService(self) -> None:
        super().stopService()  # type: ignore[no-untyped-call]
        signal.signal(signal.SIGHUP, self._previous)  # type: ignore[arg-type]


def makeService(options: Options) -> IService:
    """
    Build the service tree for the loaded configuration on the global
    reactor, reloading certificates on C{SIGHUP}.
    """
    from twisted.internet import reactor

    from txproxy import service

    root = service.makeService(options["proxy"], cast(IProxyReactor, reactor))
    hangup = HangupReloads(cast(IReactorFromThreads, reactor), root.reload_certificates)
    hangup.setServiceParent(root)  # type: ignore[no-untyped-call]
    return root
