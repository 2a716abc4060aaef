"""PodSecurity admission (upstream ``k8s.io/pod-security-admission``): ``admission.py`` the
plugin, ``policy/`` the checks (one module per upstream check ID), ``api/`` levels, versions and
namespace labels, ``config.py`` the ``PodSecurityConfiguration`` read from
``--admission-control-config-file``."""

from kubeling.apiserver.admission.podsecurity.admission import PodSecurity
from kubeling.apiserver.admission.podsecurity.config import ConfigError, PodSecurityConfiguration, load

__all__ = ["ConfigError", "PodSecurity", "PodSecurityConfiguration", "load"]
