"""``kubeling secrets-encrypt status|enable|disable|prepare|rotate|reencrypt|rotate-keys|reload``,
as k3s's ``k3s secrets-encrypt``.

The command asks the running server (``/v1-k3s/encrypt/*``, `kubeling.apiserver.secretsencrypt`)
with the admin kubeconfig of ``--data-dir`` (or ``--kubeconfig``); the server rewrites its
configuration, reloads it and re-encrypts the stored objects itself, so no restart is needed.
The server must run with ``--secrets-encryption`` (or ``--encryption-provider-config``).

``status`` prints what k3s prints::

    Encryption Status: Enabled
    Current Rotation Stage: start
    Server Encryption Hashes: All hashes match

    Active  Key Type  Name
    ------  --------  ----
     *      AES-CBC   aescbckey
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

COMMANDS = ("status", "enable", "disable", "prepare", "rotate", "reencrypt", "rotate-keys", "reload")
HELP = {"status": "print the encryption status and keys",
        "enable": "encrypt Secrets with AES-CBC (and rewrite them)",
        "disable": "store Secrets in plain text again (and rewrite them)",
        "prepare": "add a new key that reads (the first stage of a rotation)",
        "rotate": "make the prepared key the one that writes",
        "reencrypt": "rewrite every Secret with the write key and drop the old keys",
        "rotate-keys": "prepare, rotate and reencrypt in one step",
        "reload": "read the encryption configuration file again"}
KEY_TYPES = {"aescbc": "AES-CBC", "aesgcm": "AES-GCM", "secretbox": "XSalsa20-Poly1305", "identity": "Identity"}


def add_subcommands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("secrets-encrypt", help="control encryption at rest of Secrets (as k3s's)")
    cmds = p.add_subparsers(dest="encrypt_command", required=True)
    for name in COMMANDS:
        c = cmds.add_parser(name, help=HELP[name])
        c.add_argument("--data-dir", default=".kubeling", help="the server's data directory (default: .kubeling)")
        c.add_argument("--kubeconfig", default=None, help="default: <data-dir>/admin.kubeconfig")
        c.add_argument("-o", "--output", choices=("text", "json"), default="text")
        c.set_defaults(func=cmd_secrets_encrypt)


def format_status(st: dict) -> str:
    lines = [f"Encryption Status: {'Enabled' if st.get('enabled') else 'Disabled'}",
             f"Current Rotation Stage: {st.get('stage') or 'start'}",
             "Server Encryption Hashes: All hashes match", "",
             "Active  Key Type  Name", "------  --------  ----"]
    for p in st.get("providers") or ():
        if p.get("type") == "identity":
            continue
        lines.append(f" {'*' if p.get('active') else ' '}      {KEY_TYPES.get(p['type'], p['type'])}   {p.get('name', '')}")
    stale = sum((st.get("stale") or {}).values())
    if stale:
        lines += ["", f"{stale} stored objects are not written with the active key: run reencrypt"]
    return "\n".join(lines)


async def _call(kubeconfig: str, command: str) -> dict:
    from kubeling.client.rest import RESTClient
    client = RESTClient.from_kubeconfig(kubeconfig, component="secrets-encrypt")
    try:
        if command == "status":
            return await client.request("GET", "/v1-k3s/encrypt/status")
        return await client.request("POST", "/v1-k3s/encrypt/config", body={"stage": command})
    finally:
        await client.close()


def cmd_secrets_encrypt(args: argparse.Namespace) -> int:
    import json

    from kubeling.api.errors import StatusError
    kubeconfig = args.kubeconfig or str(Path(args.data_dir) / "admin.kubeconfig")
    command = args.encrypt_command
    try:
        st = asyncio.run(_call(kubeconfig, command))
    except StatusError as e:
        if e.code == 404:
            print("kubeling secrets-encrypt: the server does not encrypt at rest: start it with --secrets-encryption "
                  "(or --encryption-provider-config)", file=sys.stderr)
        else:
            print(f"kubeling secrets-encrypt {command}: {e.message}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - one line for the user, whatever failed
        print(f"kubeling secrets-encrypt {command}: {e}", file=sys.stderr)
        return 1
    if args.output == "json":
        print(json.dumps(st, indent=2))
    elif command == "status":
        print(format_status(st))
    else:
        print(f"{command} completed successfully; current rotation stage: {st.get('stage')}")
    return 0
