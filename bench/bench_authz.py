"""Cost of access control per request (issue 9): ``python bench/bench_authz.py [--bindings N] [--requests N]``.

Starts a plain API server on 127.0.0.1 (harness, ``--token-auth-file``, no controllers) and
times ``GET /api/v1/namespaces/bench/configmaps`` (10 ConfigMaps) on one keep-alive HTTPS
connection per case, in rounds that alternate the cases, so that noise hits them alike:

- ``masters``: the admin client certificate (``system:masters`` short-circuits the chain) — the
  baseline;
- ``rbac-token``: a ``--token-auth-file`` user allowed by a RoleBinding to a ClusterRole that may read ConfigMaps;
- ``impersonated``: the admin acting as that user (``Impersonate-User``: two more authorizations);
- ``serviceaccount``: a service account token (JWT verified, account looked up), bound the same way;
- ``denied``: a user nobody bound (walks every binding, then 403).

Then ``--bindings`` ClusterRoleBindings and as many RoleBindings for other users are added and
the rounds run again: what RBAC costs as the policy grows. Prints µs per request (median of the
rounds) and the ratio to the baseline. Everything runs on loopback; the server is stopped by pid.
"""

from __future__ import annotations

import argparse
import http.client
import json
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

import harness  # noqa: E402

PATH = "/api/v1/namespaces/bench/configmaps"
JSON = {"Content-Type": "application/json"}


def connection(c, ctx) -> http.client.HTTPSConnection:
    return http.client.HTTPSConnection("127.0.0.1", c.port, context=ctx, timeout=30)


def timed(conn, headers: dict, n: int, want: int) -> float:
    """µs per request over ``n`` requests."""
    t = time.perf_counter()
    for _ in range(n):
        conn.request("GET", PATH, headers=headers)
        r = conn.getresponse()
        r.read()
        if r.status != want:
            raise SystemExit(f"unexpected {r.status} for {headers}")
    return (time.perf_counter() - t) / n * 1e6


def post(c, path: str, obj: dict) -> None:
    status, body = c.request("POST", path, json.dumps(obj).encode(), JSON)
    if status not in (200, 201):
        raise SystemExit(f"POST {path}: {status} {body[:200]!r}")


def rounds(c, cases: dict, n: int, k: int) -> dict[str, float]:
    got: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(k):
        for name, (conn, headers, want) in cases.items():
            got[name].append(timed(conn, headers, n, want))
    return {name: statistics.median(v) for name, v in got.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bindings", type=int, default=1000)
    ap.add_argument("--requests", type=int, default=300, help="requests per case per round")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    d = Path(tempfile.mkdtemp(prefix="bench-authz-"))
    (d / "tokens.csv").write_text('bobtoken,bob,2,devs\nevetoken,eve,3,strangers\n')
    c = harness.Cluster(d / "cluster", extra_args=("--token-auth-file", str(d / "tokens.csv"), "--controllers", "",
                                                   "--disable-scheduler"))
    c.start()
    try:
        post(c, "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}})
        post(c, "/api/v1/namespaces/bench/serviceaccounts", {"apiVersion": "v1", "kind": "ServiceAccount",
                                                            "metadata": {"name": "reader"}})
        for i in range(10):
            post(c, f"{PATH}", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"cm-{i}"},
                                "data": {"k": "v" * 100}})
        # (view is aggregated by a controller this server does not run: a role of its own)
        post(c, "/apis/rbac.authorization.k8s.io/v1/clusterroles", {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "bench-reader"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]}]})
        for name, subject in (("bob-view", {"kind": "User", "name": "bob", "apiGroup": "rbac.authorization.k8s.io"}),
                              ("reader-view", {"kind": "ServiceAccount", "name": "reader", "namespace": "bench"})):
            post(c, "/apis/rbac.authorization.k8s.io/v1/namespaces/bench/rolebindings", {
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "bench-reader"},
                "subjects": [subject]})
        status, body = c.request("POST", "/api/v1/namespaces/bench/serviceaccounts/reader/token", json.dumps(
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}}).encode(), JSON)
        sa_token = json.loads(body)["status"]["token"]
        admin_ctx = c.ssl_context()
        plain_ctx = ssl.create_default_context(cafile=str(c.data_dir / "pki" / "ca.crt"))
        cases = {
            "masters": (connection(c, admin_ctx), {}, 200),
            "rbac-token": (connection(c, plain_ctx), {"Authorization": "Bearer bobtoken"}, 200),
            "impersonated": (connection(c, admin_ctx), {"Impersonate-User": "bob", "Impersonate-Group": "devs"}, 200),
            "serviceaccount": (connection(c, plain_ctx), {"Authorization": f"Bearer {sa_token}"}, 200),
            "denied": (connection(c, plain_ctx), {"Authorization": "Bearer evetoken"}, 403),
        }
        rounds(c, cases, 50, 1)  # warm up: connections, caches
        results = {"default policy": rounds(c, cases, args.requests, args.rounds)}
        for i in range(args.bindings):
            post(c, "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", {
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": f"filler-{i}"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
                "subjects": [{"kind": "User", "name": f"filler-{i}", "apiGroup": "rbac.authorization.k8s.io"}]})
            post(c, "/apis/rbac.authorization.k8s.io/v1/namespaces/bench/rolebindings", {
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": f"filler-{i}"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
                "subjects": [{"kind": "Group", "name": f"filler-{i}", "apiGroup": "rbac.authorization.k8s.io"}]})
        time.sleep(1)  # the watch cache has the bindings
        rounds(c, cases, 50, 1)
        results[f"+{args.bindings} ClusterRoleBindings and RoleBindings"] = rounds(c, cases, args.requests, args.rounds)
        for title, r in results.items():
            base = r["masters"]
            print(f"\n{title}: µs per GET (median of {args.rounds} rounds of {args.requests})")
            for name, us in r.items():
                print(f"  {name:15s} {us:8.0f}  ×{us / base:.2f}")
    finally:
        c.stop()


if __name__ == "__main__":
    main()
