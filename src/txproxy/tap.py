# -*- test-case-name: tests.test_tap -*-
"""
The C{twistd txproxy} command line: options, the default configuration, and the service.
"""

from __future__ import annotations

import sys
from importlib.resources import files
from typing import cast

from twisted.application.service import IService
from twisted.python import usage

from txproxy.check import check
from txproxy.config import InvalidConfiguration, load
from txproxy.interfaces import IProxyReactor


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


def makeService(options: Options) -> IService:
    """
    Build the service tree for the loaded configuration on the global reactor.
    """
    from twisted.internet import reactor

    from txproxy import service

    return service.makeService(options["proxy"], cast(IProxyReactor, reactor))
