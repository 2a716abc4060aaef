"""Liveness, readiness and startup probes (upstream's ``pkg/probe`` and ``pkg/kubelet/prober``).

One file per concept::

    probe.py     the outcome of one probe run (`Result`, `Outcome`), named-port resolution and
                 the Go-style wording shared by the runners
    exec.py      exec probes through ``RuntimeService.exec_sync``
    http.py      httpGet probes, and the small HTTP/1.1 GET client lifecycle hooks share
    tcp.py       tcpSocket probes
    hpack.py     the HPACK (RFC 7541) decoder and a literal-only encoder, for grpc.py
    grpc.py      grpc probes: ``grpc.health.v1.Health/Check`` over a minimal h2c client
    prober.py    `Prober`: runs a container's probe spec once, retries errors, records events
    results.py   `ResultsManager`: the latest result per container id, publishing changes
    worker.py    `Worker`: one per (pod, container, probe type), the timing rules
    manager.py   `ProbeManager`: workers per pod, the kubelet-facing API

Layering: the runners (exec, http, tcp, grpc) know nothing of pods; `prober` turns a pod's probe
spec into one runner call; `worker` decides *when* to call it; `manager` owns the workers.
"""
