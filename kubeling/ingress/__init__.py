"""The Ingress controller (``kubeling ingress``): networking.k8s.io/v1 Ingresses, IngressClasses,
Services, EndpointSlices and ``kubernetes.io/tls`` Secrets become the configuration of a real
nginx (Debian's ``/usr/sbin/nginx``), reloaded gracefully — ingress-nginx's design.

- `types`: the model (Configuration, Server, Location, Backend, SSLCert);
- `controller`: which Ingresses are ours (IngressClass ``kubeling.io/ingress-nginx``) and
  `build_configuration`, the API semantics (hosts, Prefix/Exact paths, defaultBackend, TLS,
  ready endpoints);
- `annotations`: the ingress-nginx annotations honoured (ssl-redirect, force-ssl-redirect,
  proxy-body-size, proxy-*-timeout, backend-protocol, use-regex, rewrite-target);
- `template`: nginx.conf from the model;
- `ssl`: TLS Secrets checked and written as 0600 PEM files, the default certificate;
- `nginx`: the nginx master we run and signal (test, atomic replace, SIGHUP, graceful stop);
- `metrics`: ``/metrics`` and ``/healthz`` on :10254 with ingress-nginx's series;
- `server`: the process: informers, coalesced syncs, Events, ``status.loadBalancer``.

``kubeling server`` runs it as a child (``--disable ingress`` turns it off), as k3s runs Traefik.
"""
