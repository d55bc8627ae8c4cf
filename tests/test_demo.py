"""
Tests for L{txproxy.demo}: the origins of the default configuration.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from pathlib import Path

from twisted.application.service import IService
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.server import Site
from twisted.web.test.requesthelper import DummyRequest
from zope.interface.verify import verifyObject

from tests.loopback import RawClient, connect_raw, split_response
from txproxy.demo import DEMO_FILES, Origin, OriginPage, StaticFiles, StaticOrigin
from txproxy.interfaces import IServiceFactory


class OriginTests(SynchronousTestCase):
    """
    Tests for L{Origin} and L{OriginPage}.
    """

    def test_page_names_origin(self) -> None:
        """
        The page answers with the origin's name, the method and the path.
        """
        request = DummyRequest([b"some", b"path"])
        request.uri = b"/some/path?q=1"
        body = OriginPage("a").render(request)
        self.assertEqual(body, b"origin a: GET /some/path?q=1\n")
        self.assertEqual(request.responseHeaders.getRawHeaders(b"x-origin"), [b"a"])

    def test_service_listens_on_address(self) -> None:
        """
        The origin's service listens on its address once started.
        """
        origin = Origin("127.0.0.1:8081", name="a")
        verifyObject(IServiceFactory, origin)
        reactor = MemoryReactor()
        service = origin.make_service(reactor)
        self.assertTrue(IService.providedBy(service))
        service.privilegedStartService()
        service.startService()
        [(port, _, _, interface)] = reactor.tcpServers
        self.assertEqual((port, interface), (8081, "127.0.0.1"))


class StaticOriginTests(TestCase):
    """
    Tests for L{StaticOrigin} and L{StaticFiles}, over loopback.
    """

    def serve(self, directory: str, max_age: int = 60) -> int:
        """
        Serve C{directory} with L{StaticFiles} on a free port until the test ends.
        """
        files = StaticFiles(directory)
        files.max_age = max_age
        site = Site(files)
        site.noisy = False
        site.log = lambda request: None  # type: ignore[method-assign]
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return int(port.getHost().port)

    @inlineCallbacks
    def get(
        self, port: int, target: bytes, headers: bytes = b""
    ) -> Generator[Deferred[object], object, tuple[int, dict[bytes, list[bytes]], bytes]]:
        client = yield connect_raw(port)
        assert isinstance(client, RawClient)
        client.transport.write(
            b"GET %s HTTP/1.1\r\nHost: a\r\n%sConnection: close\r\n\r\n" % (target, headers)
        )
        data = yield client.closed
        assert isinstance(data, bytes)
        return split_response(data)

    @inlineCallbacks
    def test_validators_and_lifetime(self) -> Generator[Deferred[object], object, None]:
        """
        A file comes with C{Cache-Control: public, max-age}, C{Last-Modified}
        and an C{ETag}; a request whose C{If-None-Match} matches it, weakly
        too, gets 304, and a C{If-None-Match} that does not overrides a
        matching C{If-Modified-Since}.
        """
        directory = self.mktemp()
        os.mkdir(directory)
        Path(directory, "a.txt").write_bytes(b"hello")
        port = self.serve(directory, max_age=30)
        status, headers, body = yield self.get(port, b"/a.txt")
        self.assertEqual((status, body), (200, b"hello"))
        self.assertEqual(headers[b"cache-control"], [b"public, max-age=30"])
        [etag] = headers[b"etag"]
        [modified] = headers[b"last-modified"]
        for sent in (etag, b"W/" + etag, b'"x", ' + etag):
            status, headers, body = yield self.get(port, b"/a.txt", b"If-None-Match: %s\r\n" % sent)
            self.assertEqual((status, body), (304, b""))
        status, _, body = yield self.get(
            port, b"/a.txt", b'If-None-Match: "x"\r\nIf-Modified-Since: %s\r\n' % modified
        )
        self.assertEqual((status, body), (200, b"hello"))
        status, _, _ = yield self.get(port, b"/a.txt", b"If-Modified-Since: %s\r\n" % modified)
        self.assertEqual(status, 304)

    def test_demo_files(self) -> None:
        """
        Without a directory, the origin serves L{DEMO_FILES} from a directory
        it makes, and removes it when it stops.
        """
        origin = StaticOrigin("127.0.0.1:8090")
        verifyObject(IServiceFactory, origin)
        memory = MemoryReactor()
        service = origin.make_service(memory)
        service.privilegedStartService()
        service.startService()
        [(port, site, _, interface)] = memory.tcpServers
        self.assertEqual((port, interface), (8090, "127.0.0.1"))
        directory = site.resource.path
        self.assertEqual(sorted(os.listdir(directory)), sorted(DEMO_FILES))
        self.assertGreater(len(DEMO_FILES["data.json"]), 60_000)
        service.stopService()
        self.assertFalse(os.path.exists(directory))
