"""Resource quota (upstream's ``pkg/quota/v1``): what objects use (`evaluators`) and ResourceList
arithmetic (`resources`). The ResourceQuota admission plugin
(``kubeling/apiserver/admission/resourcequota.py``) charges usage on create, and the
ResourceQuota controller (``kubeling/controllers/resourcequota.py``) recounts it."""
