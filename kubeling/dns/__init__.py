"""Cluster DNS (``kubeling dns``): the records upstream's DNS specification asks for, served on
the cluster DNS IP (the ``kube-system/kube-dns`` Service), as CoreDNS's kubernetes plugin does.
"""
