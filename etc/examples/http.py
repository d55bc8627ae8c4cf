"""
An HTTP reverse proxy: routing by host, path, header and method, rewrites,
header edits, limits and an access log.

    twistd -n txproxy --config etc/examples/http.py
    curl -H 'Host: api.example.com' http://127.0.0.1:8080/v1/users
"""

import re

from txproxy.config import AccessLog, HTTPListener, Limits, Pool, Proxy, Route, Server

api = Pool(
    "api",
    servers=[Server("127.0.0.1:9001"), Server("127.0.0.1:9002", weight=3)],
    balancer="least_connections",
    keepalive=64,  # idle connections kept per server for reuse
)
static = Pool("static", servers=[Server("127.0.0.1:9010")])
admin = Pool("admin", servers=[Server("127.0.0.1:9020")])

proxy = Proxy(
    listeners=[
        HTTPListener(
            "tcp:8080:interface=127.0.0.1",
            routes=[
                # api.example.com/v1/users reaches the api servers as /users.
                Route(api, host="api.example.com", path="/v1/", strip_prefix=True),
                # Any subdomain of example.net; /old/x is forwarded as /new/x.
                Route(api, host="*.example.net", rewrite=(re.compile(r"^/old/"), "/new/")),
                # Only POSTs carrying the right header reach the admin pool.
                Route(
                    admin,
                    path="/admin/",
                    methods=["POST"],
                    headers={"X-Admin": "yes"},
                    set_request_headers={"X-Internal": "1"},
                    remove_response_headers=["Set-Cookie"],
                ),
                # Static files may be large and slow.
                Route(
                    static,
                    path="/static/",
                    limits=Limits(max_body=0, upstream_response_timeout=300.0),
                    set_response_headers={"Cache-Control": "public, max-age=3600"},
                ),
            ],
            limits=Limits(max_body=10 * 1024 * 1024, client_idle_timeout=30.0),
            access_log=AccessLog(path="/tmp/txproxy-access.log", format="combined"),
        ),
    ],
)
