"""
Tests for L{txproxy.demo}: the origins of the default configuration.
"""

from __future__ import annotations

from twisted.application.service import IService
from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest
from zope.interface.verify import verifyObject

from txproxy.demo import Origin, OriginPage
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
