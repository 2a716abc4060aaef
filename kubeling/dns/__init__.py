"""Cluster DNS (``kubeling dns``): upstream's DNS specification (kubernetes/dns
docs/specification.md) served as CoreDNS's ``kubernetes`` plugin serves it, on the cluster DNS IP.

Like k3s, ``kubeling server`` runs it as a child process (`kubeling.cli._run.supervise_child`)
unless ``--disable coredns``. It is not a pod: it listens on the server's advertise address (or the
host's primary address when that is loopback) and writes the selector-less Service
``kube-system/kube-dns`` (clusterIP 10.43.0.10) with an EndpointSlice and Endpoints naming that
address, so that kube-proxy on every node DNATs the cluster DNS IP to it. Pods get ``nameserver
10.43.0.10``, the ``<ns>.svc.<zone> svc.<zone> <zone>`` search list and ``ndots:5`` from the
kubelet (`kubeling.kubelet.kuberuntime.dns_config`).

Modules, after CoreDNS's plugins:

    kubernetes  `Kubernetes`: indexes fed by informers (Services, EndpointSlices, Namespaces,
                Pods with ``pods verified``) and the zone's records; never calls the API to answer
    forward     `Forward`: other names to upstream resolvers (UDP, TCP on TC or for TCP clients)
    server      `DNSServer`: UDP and TCP listeners, the answer cache, truncation, SERVFAIL/FORMERR
    metrics     `Metrics`: CoreDNS's metric names (coredns_dns_requests_total, ...)
    health      ``/health`` :8080, ``/ready`` :8181, ``/metrics`` :9153
    service     the ``kube-system/kube-dns`` Service, EndpointSlice and Endpoints
    app         `run(options, stop)`: the process; `Options` are ``kubeling dns``'s flags
"""
