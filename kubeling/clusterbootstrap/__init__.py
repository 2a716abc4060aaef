"""Upstream's ``k8s.io/cluster-bootstrap``: what bootstrap tokens are (`token`)."""
