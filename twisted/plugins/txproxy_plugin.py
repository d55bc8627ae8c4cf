"""
The C{twistd txproxy} plugin, and the C{txproxy} reactor (C{twistd -r txproxy},
C{trial --reactor=txproxy}): each names the module that holds it, imports nothing else.
"""

from twisted.application.reactors import Reactor
from twisted.application.service import ServiceMaker

txproxy = ServiceMaker(  # type: ignore[no-untyped-call]
    "txproxy",
    "txproxy.tap",
    "A reverse proxy and load balancer for HTTP and TCP, configured in Python.",
    "txproxy",
)

txproxy_reactor = Reactor(
    "txproxy",
    "txproxy.reactor",
    "epoll, with writes made at the end of each turn and no legacy log context per event",
)
