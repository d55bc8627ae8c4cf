# -*- test-case-name: tests.test_demo -*-
"""
Demo origins for the examples: small web servers that say which one answered, or serve files.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from attrs import frozen
from twisted.application.service import IService, MultiService, Service
from twisted.application.strports import service as strports_service
from twisted.internet.interfaces import IReactorCore
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Request, Site
from twisted.web.static import File
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


DEMO_FILES = {
    "index.html": (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>txproxy demo</title>\n'
        '<link rel="stylesheet" href="style.css"><script src="app.js"></script></head>\n'
        "<body><h1>Served by the demo origin, through txproxy</h1></body></html>\n"
    ),
    "style.css": "body { font-family: sans-serif; margin: 2em; }\nh1 { color: #345; }\n" * 40,
    "app.js": "document.addEventListener('DOMContentLoaded', () => console.log('demo'));\n" * 40,
    "data.json": json.dumps(
        {
            "items": [
                {"id": number, "name": f"item {number}", "tags": ["a", "b"]}
                for number in range(1200)
            ]
        }
    ),
}
"""
The files a L{StaticOrigin} without a directory serves: a page, its style
sheet and script, and about 64 KiB of JSON.
"""


def _weak_match(tags: bytes, etag: bytes) -> bool:
    """
    Whether an C{If-None-Match} value matches C{etag} by weak comparison
    (RFC 9110 section 13.1.2), as a cache that compressed the response sends
    the tag back weakened.
    """
    opaque = etag.removeprefix(b"W/")
    return any(tag.strip(b" \t").removeprefix(b"W/") in (opaque, b"*") for tag in tags.split(b","))


class StaticFiles(File):
    """
    The files under a directory, with what caches need: C{Cache-Control:
    public, max-age}, C{Last-Modified} (as L{File} sends it) and an C{ETag}
    made of the file's modification time and size, as nginx makes it. A
    request whose C{If-None-Match} matches gets 304.

    @ivar max_age: the C{max-age} of every file, in seconds.
    """

    max_age = 60

    def createSimilarFile(self, path: str) -> File:
        similar = super().createSimilarFile(path)  # type: ignore[no-untyped-call]
        assert isinstance(similar, StaticFiles)
        similar.max_age = self.max_age
        return similar

    def render_GET(self, request: Request) -> bytes | int:
        self.restat(False)
        if self.exists() and not self.isdir():
            modified = int(self.getModificationTime())
            etag = b'"%x-%x"' % (modified, self.getsize())
            request.setHeader(b"etag", etag)  # type: ignore[no-untyped-call]
            request.setHeader(  # type: ignore[no-untyped-call]
                b"cache-control", b"public, max-age=%d" % self.max_age
            )
            tags = request.getHeader(b"if-none-match")
            if tags is not None:
                # RFC 9110 section 13.2.2: If-None-Match decides alone.
                request.requestHeaders.removeHeader(b"if-modified-since")
                if _weak_match(tags, etag):
                    request.setResponseCode(304)
                    return b""
        rendered: bytes | int = super().render_GET(request)  # type: ignore[no-untyped-call]
        return rendered

    render_HEAD = render_GET


class _RemoveDirectory(Service):
    """
    Removes a directory the demo made, when the demo stops.
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def stopService(self) -> None:
        super().stopService()  # type: ignore[no-untyped-call]
        shutil.rmtree(self.path, ignore_errors=True)


@implementer(IServiceFactory)
@frozen
class StaticOrigin:
    """
    A demo origin on C{address} (C{host:port}) that serves static files,
    with validators and a lifetime that caches use (L{StaticFiles}).

    @ivar directory: the directory to serve, or L{None} for L{DEMO_FILES},
        written to a temporary directory removed when the origin stops.
    @ivar max_age: the C{max-age} of every file, in seconds.
    """

    address: str
    directory: str | None = None
    max_age: int = 60

    _log = Logger()

    def make_service(self, reactor: IReactorCore) -> IService:
        host, _, port = self.address.rpartition(":")
        service = MultiService()  # type: ignore[no-untyped-call]
        directory = self.directory
        if directory is None:
            directory = tempfile.mkdtemp(prefix="txproxy-demo-")
            for name, text in DEMO_FILES.items():
                Path(directory, name).write_text(text, encoding="utf-8")
            _RemoveDirectory(directory).setServiceParent(service)  # type: ignore[no-untyped-call]
        self._log.info(
            "demo static origin on http://{address}/ serving {directory}",
            address=self.address,
            directory=directory,
        )
        files = StaticFiles(directory)
        files.max_age = self.max_age
        site = Site(files)  # type: ignore[no-untyped-call]
        site.noisy = False
        site.log = lambda request: None  # type: ignore[method-assign]
        listening = strports_service(f"tcp:{port}:interface={host}", site, reactor=reactor)
        listening.setServiceParent(service)  # type: ignore[no-untyped-call]
        return service
