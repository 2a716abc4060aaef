"""HTTP filters of the API server: aiohttp middlewares named after upstream's
``k8s.io/apiserver/pkg/server/filters``.

- `longrunning`: which requests are long-running (watch, proxy, exec, attach, log, portforward);
- `timeout`: the request deadline (``--request-timeout``), covering the response write;
- `maxinflight`: the read-only and mutating in-flight budgets, answered with 429.

Order in the application's middleware list (outermost first), as upstream's handler chain::

    serving.track ─► timeout ─► authentication ─► maxinflight ─► authorization ─► handler

`serving.track` is the connection tracker of `kubeling.apiserver.serving`. The timeout filter
writes the response itself (under the deadline), so nothing outside it may change a response.
The in-flight filter needs the authenticated user (``request["user"]``) for its
``system:masters`` exemption, so it comes after authentication.
"""
