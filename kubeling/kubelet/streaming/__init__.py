"""Streaming protocols shared by the agent's server and the API server (upstream:
``apimachinery/pkg/util/httpstream`` and ``kubelet/pkg/cri/streaming``).

Layers, lowest first (a module imports only those above it in this list)::

    spdy.py           SPDY/3.1 frames and header compression, sans I/O
    spdyconn.py       a SPDY session over a `ByteStream`: streams, flow control, ping, goaway
    wsstream.py       WebSocket channel framing (v1..v5, base64) and subprotocol negotiation
    transport.py      ByteStreams: sockets, WebSocket messages (the SPDY tunnel), hijacked HTTP
    remotecommand.py  exec/attach sessions over WebSocket channels or SPDY streams
    portforward.py    port forwarding over SPDY stream pairs or WebSocket channels

Which protocol a client speaks (kubectl 1.32/1.33 and the Python client)::

    kubectl exec/attach/cp     WebSocket v5.channel.k8s.io; fallback: Upgrade SPDY/3.1 + v4
    kubectl port-forward       WebSocket SPDY/3.1+portforward.k8s.io (SPDY in WS messages);
                               fallback: Upgrade SPDY/3.1 + portforward.k8s.io
    kubernetes.stream.stream   WebSocket v5/v4.channel.k8s.io (exec, attach)
    kubernetes portforward()   WebSocket v4.channel.k8s.io, channel pairs per port
"""
