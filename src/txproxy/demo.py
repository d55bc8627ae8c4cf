# -*- test-case-name: tests.test_demo -*-
"""
Demo origins: small web servers that say which one answered, for the default configuration.
"""

from __future__ import annotations

from attrs import frozen
from twisted.application.service import IService
from twisted.application.strports import service as strports_service
from twisted.internet.interfaces import IReactorCore
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Request, Site
from zope.interface import implementer

from txproxy.interfaces import IServiceFactory


class OriginPage(Resource):
    """
    Answers every path with the origin's name, the method and the path.
    """

    isLeaf = True

    def __init__(self, name: str) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.name = name

    def render(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")  # type: ignore[no-untyped-call]
        request.setHeader(b"x-origin", self.name.encode("utf-8"))  # type: ignore[no-untyped-call]
        method = request.method.decode("ascii", "replace")
        path = request.uri.decode("ascii", "replace")
        return f"origin {self.name}: {method} {path}\n".encode()


@implementer(IServiceFactory)
@frozen
class Origin:
    """
    A demo origin on C{address} (C{host:port}) that answers with its C{name}.
    """

    address: str
    name: str

    _log = Logger()

    def make_service(self, reactor: IReactorCore) -> IService:
        host, _, port = self.address.rpartition(":")
        self._log.info(
            "demo origin {name} on http://{address}/", name=self.name, address=self.address
        )
        site = Site(OriginPage(self.name))  # type: ignore[no-untyped-call]
        site.noisy = False
        site.log = lambda request: None  # type: ignore[method-assign]  # txproxy's access log tells the story
        return strports_service(f"tcp:{port}:interface={host}", site, reactor=reactor)
