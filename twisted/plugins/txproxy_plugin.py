"""
The C{twistd txproxy} plugin: names the module that builds the service, imports nothing else.
"""

from twisted.application.service import ServiceMaker

txproxy = ServiceMaker(  # type: ignore[no-untyped-call]
    "txproxy",
    "txproxy.tap",
    "A reverse proxy and load balancer for HTTP and TCP, configured in Python.",
    "txproxy",
)
