"""The Ingress controller (``kubeling ingress``): Ingresses, Services, EndpointSlices and TLS
Secrets become the configuration of a real nginx, reloaded gracefully.
"""
