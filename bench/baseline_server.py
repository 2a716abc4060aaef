"""The benchmark's baseline: a bare aiohttp HTTPS server with the same TLS setup as kubeling
(the cluster's serving certificate, client certificates verified) that answers every request
with 201 and the body it was sent. What the load generator reaches against it is the ceiling
of client + TLS + HTTP on this machine, measured in the same run as the API server.

    python bench/baseline_server.py PKI_DIR PORT
"""

from __future__ import annotations

import ssl
import sys

import uvloop
from aiohttp import web


async def echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.Response(body=body or b"{}", status=201 if request.method == "POST" else 200,
                        content_type="application/json")


def main() -> None:
    pki, port = sys.argv[1], int(sys.argv[2])
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(f"{pki}/apiserver.crt", f"{pki}/apiserver.key")
    ctx.load_verify_locations(f"{pki}/ca.crt")
    ctx.verify_mode = ssl.CERT_OPTIONAL
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    uvloop.install()
    web.run_app(app, host="127.0.0.1", port=port, ssl_context=ctx, access_log=None, print=None)


if __name__ == "__main__":
    main()
