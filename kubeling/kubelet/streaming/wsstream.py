"""The WebSocket channel protocols (upstream ``apimachinery/pkg/util/httpstream/wsstream``).

Every binary message starts with one byte naming its channel; the rest is the channel's data::

    [channel][data ...]     channel 0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize
                            (port-forward: 2*i data and 2*i+1 error of the i-th port)

In the ``base64`` variants the message is text: the channel as an ASCII digit, then the data in
base64. ``v5.channel.k8s.io`` adds one control message: channel 255 with one byte, the channel
the client will send nothing more on (kubectl closes stdin this way; v4 had no way to).

Subprotocol versions for exec/attach (what each adds):

=====================  ===========================================================
``channel.k8s.io``     stdin/stdout/stderr; errors as text on channel 3 (v1; also no
                       subprotocol at all)
``v2.channel.k8s.io``  same channels (v2 fixed stream semantics on SPDY)
``v3.channel.k8s.io``  + resize on channel 4, JSON ``{"Width": w, "Height": h}``
``v4.channel.k8s.io``  + the error channel carries a JSON ``Status``, also on success
``v5.channel.k8s.io``  + the close signal (255)
=====================  ===========================================================

Negotiation: the first protocol in the client's list that the server supports, as upstream.
"""

from __future__ import annotations

import base64
import binascii

from aiohttp import WSMsgType, web

STDIN, STDOUT, STDERR, ERROR, RESIZE = 0, 1, 2, 3, 4
CLOSE = 255

V5 = "v5.channel.k8s.io"
V4 = "v4.channel.k8s.io"
V3 = "v3.channel.k8s.io"
V2 = "v2.channel.k8s.io"
V1 = "channel.k8s.io"
TUNNEL_PORTFORWARD = "SPDY/3.1+portforward.k8s.io"   # kubectl 1.31+: SPDY inside WebSocket

# Exec/attach subprotocols, newest first (the order the server prefers when a client offers none).
REMOTECOMMAND = (V5, V4, "v4.base64.channel.k8s.io", V3, "v3.base64.channel.k8s.io", V2,
                 "v2.base64.channel.k8s.io", V1, "base64.channel.k8s.io")
# Port-forward over channels (the Python client's form), as upstream's kubelet serves it.
PORTFORWARD = (V4, "v4.base64.channel.k8s.io", V1, "base64.channel.k8s.io")

MAX_MESSAGE = 16 * 1024 * 1024


def version_of(protocol: str) -> int:
    """5, 4, 3, 2 or 1 for a channel subprotocol ("" is v1)."""
    head = protocol.split(".", 1)[0]
    return int(head[1:]) if head[:1] == "v" and head[1:].isdigit() else 1


def requested(request: web.Request) -> list[str]:
    out: list[str] = []
    for header in request.headers.getall("Sec-WebSocket-Protocol", []):
        out += [p.strip() for p in header.split(",") if p.strip()]
    return out


def negotiate(offered: list[str], supported: tuple[str, ...]) -> str | None:
    """The first offered protocol we support; "" when none was offered; None when no match."""
    if not offered:
        return ""
    for p in offered:
        if p in supported:
            return p
    return None


def encode(channel: int, data: bytes, *, b64: bool = False) -> bytes | str:
    if b64:
        return chr(ord("0") + channel) + base64.b64encode(data).decode()
    return bytes((channel,)) + data


def decode(message: bytes | str, *, b64: bool = False) -> tuple[int, bytes] | None:
    """(channel, data) of one message; None for an empty or undecodable message."""
    if not message:
        return None
    if b64:
        text = message if isinstance(message, str) else message.decode("latin-1")
        try:
            return ord(text[0]) - ord("0"), base64.b64decode(text[1:], validate=True)
        except (binascii.Error, ValueError):
            return None
    raw = message if isinstance(message, bytes) else message.encode()
    return raw[0], raw[1:]


class ChannelConn:
    """A negotiated channel connection over an aiohttp server WebSocket."""

    def __init__(self, ws: web.WebSocketResponse, protocol: str) -> None:
        self.ws = ws
        self.protocol = protocol
        self.version = version_of(protocol)
        self.b64 = "base64" in protocol

    async def send(self, channel: int, data: bytes) -> None:
        frame = encode(channel, data, b64=self.b64)
        if isinstance(frame, str):
            await self.ws.send_str(frame)
        else:
            await self.ws.send_bytes(frame)

    async def receive(self) -> tuple[int, bytes | None] | None:
        """The next (channel, data); data is None when v5's close signal closed that channel.
        None when the WebSocket ended."""
        while True:
            msg = await self.ws.receive()
            if msg.type in (WSMsgType.BINARY, WSMsgType.TEXT):
                got = decode(msg.data, b64=self.b64)
                if got is None:
                    continue
                channel, data = got
                if channel == CLOSE and self.version >= 5:
                    if len(data) == 1:
                        return data[0], None
                    continue
                return channel, data
            if msg.type in (WSMsgType.PING, WSMsgType.PONG):
                continue
            return None

    async def close(self) -> None:
        try:
            await self.ws.close()
        except (ConnectionError, RuntimeError):
            pass


async def accept(request: web.Request, supported: tuple[str, ...]) -> ChannelConn | web.Response:
    """Complete the WebSocket handshake with a channel protocol, or a 400 naming what we support."""
    offered = requested(request)
    chosen = negotiate(offered, supported)
    if chosen is None:
        return web.Response(status=400, text=f"requested protocol(s) are not supported: {offered}; "
                                             f"supports {list(supported)}")
    ws = web.WebSocketResponse(protocols=(chosen,) if chosen else (), max_msg_size=MAX_MESSAGE,
                               autoping=True)
    await ws.prepare(request)
    return ChannelConn(ws, chosen)
