"""admissionregistration.k8s.io (upstream ``pkg/registry/admissionregistration``): the webhook
configurations (``validatingwebhookconfiguration.py``, ``mutatingwebhookconfiguration.py``) and
the CEL admission policies and their bindings."""
