#!/usr/bin/env python3
"""Wait until the API server named in a kubeconfig answers ``GET /readyz`` with 200.

Usage: ``wait-ready.py KUBECONFIG [--timeout 60] [--pid PID] [--log FILE]``

It authenticates with the kubeconfig's embedded client certificate and trusts its embedded CA,
as kubectl would. It waits first for the kubeconfig file itself (the server writes it on first
start). With ``--pid`` it gives up at once if that process dies; with ``--log`` it prints the
log's tail on failure. Exit 0 when ready, 1 otherwise.
"""

from __future__ import annotations

import argparse
import base64
import os
import ssl
import sys
import tempfile
import time
import urllib.error
import urllib.request

import yaml


def ssl_context(kubeconfig: dict, tmpdir: str) -> tuple[str, ssl.SSLContext]:
    """Return (server URL, SSL context) for the kubeconfig's current context."""
    ctx_name = kubeconfig.get("current-context")
    context = next(c["context"] for c in kubeconfig["contexts"] if c["name"] == ctx_name)
    cluster = next(c["cluster"] for c in kubeconfig["clusters"] if c["name"] == context["cluster"])
    user = next(u["user"] for u in kubeconfig["users"] if u["name"] == context["user"])
    ctx = ssl.create_default_context()
    if "certificate-authority-data" in cluster:
        ctx.load_verify_locations(
            cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
    elif "certificate-authority" in cluster:
        ctx.load_verify_locations(cafile=cluster["certificate-authority"])
    cert, key = user.get("client-certificate"), user.get("client-key")
    if "client-certificate-data" in user:
        cert, key = os.path.join(tmpdir, "client.crt"), os.path.join(tmpdir, "client.key")
        with open(cert, "wb") as f:
            f.write(base64.b64decode(user["client-certificate-data"]))
        with open(key, "wb") as f:
            f.write(base64.b64decode(user["client-key-data"]))
    if cert:
        ctx.load_cert_chain(cert, key)
    return cluster["server"], ctx


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("kubeconfig")
    parser.add_argument("--timeout", type=float, default=60)
    parser.add_argument("--pid", type=int)
    parser.add_argument("--log")
    args = parser.parse_args()
    deadline = time.monotonic() + args.timeout
    last_error = "kubeconfig not written yet"

    def alive() -> bool:
        if args.pid is None:
            return True
        try:
            os.kill(args.pid, 0)
        except ProcessLookupError:
            return False
        return True

    with tempfile.TemporaryDirectory() as tmpdir:
        while time.monotonic() < deadline and alive():
            if os.path.exists(args.kubeconfig):
                try:
                    with open(args.kubeconfig) as f:
                        server, ctx = ssl_context(yaml.safe_load(f), tmpdir)
                    with urllib.request.urlopen(server + "/readyz", context=ctx, timeout=5) as r:
                        if r.status == 200:
                            print(f"ready: {server}")
                            return 0
                        last_error = f"/readyz returned {r.status}"
                except (OSError, ValueError, KeyError, StopIteration, yaml.YAMLError) as e:
                    last_error = f"{type(e).__name__}: {e}"
            time.sleep(0.2)
    why = "server process exited" if not alive() else f"not ready after {args.timeout:.0f}s"
    print(f"{why}; last error: {last_error}", file=sys.stderr)
    if args.log and os.path.exists(args.log):
        with open(args.log, errors="replace") as f:
            tail = f.readlines()[-40:]
        print(f"--- last lines of {args.log} ---\n" + "".join(tail), file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
