"""``kubeling token create|list|delete``: bootstrap tokens to join agents, as k3s's ``k3s token``
(and kubeadm's ``kubeadm token``).

The command talks to the running API server with the admin kubeconfig of ``--data-dir`` (or
``--kubeconfig``); a token is a ``kube-system`` Secret ``bootstrap-token-<id>``
(`kubeling.clusterbootstrap.token`)::

    kubeling token create [TOKEN] [--ttl 24h] [--description TEXT] [--groups G,...] [--usages U,...]
        prints the join token K10<sha256 of the cluster CA>::<id>.<secret>, for
        kubeling agent --server URL --token ...; --ttl 0 never expires
    kubeling token list
        TOKEN  TTL  EXPIRES  USAGES  DESCRIPTION  EXTRA GROUPS   (kubeadm's columns)
    kubeling token delete ID|TOKEN...
        the agent that joined keeps its certificate; the token is refused from then on (401)

The token cleaner in the controller manager deletes expired tokens.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import sys
from pathlib import Path

from kubeling.clusterbootstrap import token as bt

DEFAULT_TTL = "24h"


def add_subcommands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("token", help="manage bootstrap tokens that join agents (as k3s token)")
    cmds = p.add_subparsers(dest="token_command", required=True)

    def common(c: argparse.ArgumentParser) -> argparse.ArgumentParser:
        c.add_argument("--data-dir", default=".kubeling", help="the server's data directory (default: .kubeling)")
        c.add_argument("--kubeconfig", default=None, help="default: <data-dir>/admin.kubeconfig")
        return c

    c = common(cmds.add_parser("create", help="create a bootstrap token and print the join token"))
    c.add_argument("token", nargs="?", default="", help="the token to create (<id>.<secret>; default: random)")
    c.add_argument("--ttl", default=DEFAULT_TTL, help="how long it lives, a duration such as 24h or 30m "
                                                      "(0: forever; default 24h)")
    c.add_argument("--description", default="", help="a human-friendly description")
    c.add_argument("--groups", default=bt.DEFAULT_GROUP,
                   help=f"extra groups it authenticates as, comma-separated (default {bt.DEFAULT_GROUP})")
    c.add_argument("--usages", default="signing,authentication",
                   help="comma-separated: authentication, signing (default both)")
    c.set_defaults(func=cmd_create)
    common(cmds.add_parser("list", help="list bootstrap tokens")).set_defaults(func=cmd_list)
    d = common(cmds.add_parser("delete", help="delete bootstrap tokens (by id or whole token)"))
    d.add_argument("tokens", nargs="+", metavar="ID|TOKEN")
    d.set_defaults(func=cmd_delete)


def _kubeconfig(args) -> str:
    return args.kubeconfig or str(Path(args.data_dir) / "admin.kubeconfig")


def _client(args):
    from kubeling.client.rest import RESTClient
    return RESTClient.from_kubeconfig(_kubeconfig(args), component="token")


def short_duration(seconds: float) -> str:
    """Upstream's ShortHumanDuration: ``45s``, ``59m``, ``23h``, ``6d``, ``1y``."""
    s = int(seconds)
    if s < 0:
        return "<invalid>"
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 48 * 3600:
        return f"{s // 3600}h"
    if s < 365 * 24 * 3600:
        return f"{s // 86400}d"
    return f"{s // (365 * 86400)}y"


def rows(secrets: list[dict], now: dt.datetime) -> list[list[str]]:
    """kubeadm's ``token list`` table: TOKEN, TTL, EXPIRES, USAGES, DESCRIPTION, EXTRA GROUPS."""
    out = [["TOKEN", "TTL", "EXPIRES", "USAGES", "DESCRIPTION", "EXTRA GROUPS"]]
    for s in sorted(secrets, key=lambda s: s["metadata"]["name"]):
        data = bt.secret_data(s)
        tid, secret = data.get(bt.ID_KEY, ""), data.get(bt.SECRET_KEY, "")
        if s.get("type") != bt.SECRET_TYPE or not bt.parse(f"{tid}.{secret}"):
            continue
        expires = bt.expiration(s)
        ttl = "<forever>" if expires is None else short_duration((expires - now).total_seconds())
        usages = ",".join(sorted(k[len(bt.USAGE_PREFIX):] for k, v in data.items()
                                 if k.startswith(bt.USAGE_PREFIX) and v == "true")) or "<none>"
        out.append([f"{tid}.{secret}", ttl, bt.rfc3339(expires) if expires else "<never>", usages,
                    data.get(bt.DESCRIPTION_KEY) or "<none>", data.get(bt.EXTRA_GROUPS_KEY) or "<none>"])
    return out


def _table(rows_: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows_) for i in range(len(rows_[0]))]
    return "\n".join("   ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows_)


def ca_hash(kubeconfig: str) -> str:
    from kubeling.client import kubeconfig as kc
    ca = kc.load(kubeconfig).certificate_authority_data
    if not ca:
        raise ValueError(f"{kubeconfig} names no certificate authority: cannot pin it in the join token")
    return hashlib.sha256(ca).hexdigest()


def _fail(message: str) -> int:
    print(f"kubeling token: {message}", file=sys.stderr)
    return 1


def _run(args, coro_fn) -> int:
    from kubeling.api.errors import StatusError
    from kubeling.client.exceptions import ConfigError, TransportError
    try:
        return asyncio.run(coro_fn())
    except ConfigError as e:
        return _fail(f"{e} (is --data-dir the server's?)")
    except StatusError as e:
        return _fail(e.message)
    except TransportError as e:
        return _fail(f"the server does not answer: {e}")
    except ValueError as e:
        return _fail(str(e))


def cmd_create(args: argparse.Namespace) -> int:
    from kubeling.apiserver.filters.timeout import parse_go_duration
    token = args.token or bt.generate()
    if not bt.parse(token):
        return _fail(f'the token "{token}" is not of the form [a-z0-9]{{6}}.[a-z0-9]{{16}}')
    try:
        ttl = parse_go_duration(args.ttl)
    except ValueError as e:
        return _fail(f"--ttl: {e}")
    if ttl < 0:
        return _fail("--ttl must not be negative")
    groups = [g.strip() for g in args.groups.split(",") if g.strip()]
    usages = tuple(u.strip() for u in args.usages.split(",") if u.strip())

    async def create() -> int:
        secret = bt.secret_for(token, ttl=ttl, description=args.description, usages=usages, groups=groups)
        digest = ca_hash(_kubeconfig(args))
        client = _client(args)
        try:
            await client.create("", "v1", "secrets", secret, namespace=bt.NAMESPACE)
        finally:
            await client.close()
        print(f"K10{digest}::{token}")
        return 0
    return _run(args, create)


def cmd_list(args: argparse.Namespace) -> int:
    async def list_() -> int:
        client = _client(args)
        try:
            items = (await client.list("", "v1", "secrets", namespace=bt.NAMESPACE,
                                       field_selector=f"type={bt.SECRET_TYPE}"))["items"]
        finally:
            await client.close()
        table = rows(items, dt.datetime.now(dt.timezone.utc))
        if len(table) > 1:
            print(_table(table))
        else:
            print("No bootstrap tokens found.", file=sys.stderr)
        return 0
    return _run(args, list_)


def cmd_delete(args: argparse.Namespace) -> int:
    from kubeling.client import is_not_found

    async def delete() -> int:
        client = _client(args)
        failed = 0
        try:
            for given in args.tokens:
                text = given.rpartition("::")[2]
                token_id = text.partition(".")[0]
                if not bt.ID_RE.match(token_id):
                    print(f'kubeling token: "{given}" is neither a token id ([a-z0-9]{{6}}) nor a token',
                          file=sys.stderr)
                    failed += 1
                    continue
                try:
                    await client.delete("", "v1", "secrets", bt.secret_name(token_id), namespace=bt.NAMESPACE)
                except Exception as e:
                    if not is_not_found(e):
                        raise
                    print(f'kubeling token: bootstrap token "{token_id}" not found', file=sys.stderr)
                    failed += 1
                    continue
                print(f'bootstrap token "{token_id}" deleted')
        finally:
            await client.close()
        return 1 if failed else 0
    return _run(args, delete)
