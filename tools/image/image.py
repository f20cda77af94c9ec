"""Helpers for tools/image/build.sh (docs/image.md): the parts of the image build that are data.

Subcommands (each called once by build.sh; file I/O only, no network):
  etc         /etc/passwd, group, nsswitch.conf, os-release and per-package records for scanners
  lock        tools/image/requirements.lock from pip's `--dry-run --report` (pinned, hashed)
  umoci-args  the `umoci config` arguments for tools/image/config.json (one per line)
  finish      the SPDX SBOM, attached to the OCI layout as an artifact, and the digest file

Tooling, not operator code: standard library only, run by the build venv's Python.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
EMPTY = "application/vnd.oci.empty.v1+json"
SPDX_JSON = "application/spdx+json"
REPOSITORY = "ghcr.io/runnerfleet/runnerfleet"
SITE_PACKAGES = "opt/venv/lib/python3.11/site-packages"
# The image is assembled from bookworm; scanners (trivy, grype) read these to know it.
OS_RELEASE = """PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
HOME_URL="https://www.debian.org/"
SUPPORT_URL="https://www.debian.org/support"
BUG_REPORT_URL="https://bugs.debian.org/"
"""


def load_config(path: Path, version: str = "", revision: str = "") -> dict[str, Any]:
    """tools/image/config.json with ${VERSION} and ${REVISION} filled in."""
    text = path.read_text().replace("${VERSION}", version).replace("${REVISION}", revision)
    config: dict[str, Any] = json.loads(text)
    return config


def umoci_args(config: dict[str, Any], created: str) -> list[str]:
    """`umoci config` options setting exactly the image config in `config`."""
    args = ["--created", created, "--config.user", config["user"]]
    args += ["--config.workingdir", config["workingDir"]]
    args += [a for e in config["entrypoint"] for a in ("--config.entrypoint", e)]
    args += [a for c in config["cmd"] for a in ("--config.cmd", c)]
    args += [a for k, v in config["env"].items() for a in ("--config.env", f"{k}={v}")]
    args += [a for p in config["exposedPorts"] for a in ("--config.exposedports", p)]
    for key, value in sorted(config["labels"].items()):
        args += ["--config.label", f"{key}={value}", "--manifest.annotation", f"{key}={value}"]
    args += ["--manifest.annotation", f"org.opencontainers.image.created={created}"]
    return args


def deb_fields(deb: Path) -> dict[str, str]:
    """The control fields of a .deb (`dpkg-deb -f`), continuation lines folded in."""
    text = subprocess.run(
        ["dpkg-deb", "-f", str(deb)], capture_output=True, text=True, check=True
    ).stdout
    fields: dict[str, str] = {}
    key = ""
    for line in text.splitlines():
        if line[:1] in (" ", "\t") and key:
            fields[key] += "\n" + line
        elif ":" in line:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


def write_etc(config: dict[str, Any], rootfs: Path, debs: Path) -> None:
    etc = rootfs / "etc"
    (etc / "passwd").write_text("\n".join(config["user_entries"]["passwd"]) + "\n")
    (etc / "group").write_text("\n".join(config["user_entries"]["group"]) + "\n")
    (etc / "nsswitch.conf").write_text("passwd: files\ngroup: files\nhosts: files dns\n")
    (etc / "os-release").write_text(OS_RELEASE)
    # distroless' layout: one control record per package, no dpkg database to run dpkg on.
    status = rootfs / "var/lib/dpkg/status.d"
    for deb in sorted(debs.glob("*.deb")):
        text = subprocess.run(
            ["dpkg-deb", "-f", str(deb)], capture_output=True, text=True, check=True
        ).stdout
        (status / deb_fields(deb)["Package"]).write_text(text)


def write_lock(report: Path, out: Path) -> None:
    """Pinned versions with the sha256 of the exact wheel pip chose for the image (amd64,
    CPython 3.11, glibc 2.36): `pip install --require-hashes` then accepts nothing else."""
    lines = [
        "# The image's Python dependencies (tools/image/build.sh --lock regenerates this file",
        "# from pip's resolution under the image's own Python 3.11; amd64 wheels only).",
    ]
    for item in sorted(json.loads(report.read_text())["install"], key=_name):
        meta = item["metadata"]
        if meta["name"] == "runnerfleet":
            continue
        info = item["download_info"]["archive_info"]
        digest = info.get("hashes", {}).get("sha256") or info["hash"].removeprefix("sha256=")
        lines.append(f"{meta['name']}=={meta['version']} \\\n    --hash=sha256:{digest}")
    out.write_text("\n".join(lines) + "\n")


def _name(item: dict[str, Any]) -> str:
    return str(item["metadata"]["name"]).lower()


def _spdx_id(kind: str, name: str) -> str:
    return f"SPDXRef-{kind}-" + re.sub(r"[^A-Za-z0-9.-]", "-", name)


def _deb_packages(debs: Path) -> list[dict[str, Any]]:
    packages = []
    for deb in sorted(debs.glob("*.deb")):
        f = deb_fields(deb)
        name, version, arch = f["Package"], f["Version"], f["Architecture"]
        packages.append(
            {
                "SPDXID": _spdx_id("deb", name),
                "name": name,
                "versionInfo": version,
                "supplier": "Organization: Debian",
                "downloadLocation": "NOASSERTION",
                "filesAnalyzed": False,
                "sourceInfo": f"Debian source package: {f.get('Source', name)}",
                "checksums": [{"algorithm": "SHA256", "checksumValue": _sha256(deb.read_bytes())}],
                "licenseConcluded": "NOASSERTION",
                "licenseDeclared": "NOASSERTION",
                "copyrightText": "NOASSERTION",
                "externalRefs": [
                    _purl(f"pkg:deb/debian/{name}@{version}?arch={arch}&distro=debian-12")
                ],
            }
        )
    return packages


def _python_packages(rootfs: Path, hashes: dict[str, str]) -> list[dict[str, Any]]:
    packages = []
    dists = metadata.distributions(path=[str(rootfs / SITE_PACKAGES)])
    for dist in sorted(dists, key=lambda d: d.metadata["Name"].lower()):
        name, version = dist.metadata["Name"], dist.version
        license_ = dist.metadata.get("License-Expression") or "NOASSERTION"
        package: dict[str, Any] = {
            "SPDXID": _spdx_id("pypi", name),
            "name": name,
            "versionInfo": version,
            "downloadLocation": f"https://pypi.org/project/{name}/{version}/",
            "filesAnalyzed": False,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": license_,
            "copyrightText": "NOASSERTION",
            "externalRefs": [_purl(f"pkg:pypi/{_normal(name)}@{version}")],
        }
        if _normal(name) in hashes:  # the wheel's hash from the lock file
            package["checksums"] = [{"algorithm": "SHA256", "checksumValue": hashes[_normal(name)]}]
        packages.append(package)
    return packages


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _purl(locator: str) -> dict[str, str]:
    return {
        "referenceCategory": "PACKAGE-MANAGER",
        "referenceType": "purl",
        "referenceLocator": locator,
    }


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def lock_hashes(lock: Path) -> dict[str, str]:
    found = re.findall(r"^(\S+)==\S+ \\\n\s+--hash=sha256:(\w+)", lock.read_text(), re.M)
    return {_normal(name): digest for name, digest in found}


def sbom(
    version: str, digest: str, created: str, rootfs: Path, debs: Path, lock: Path
) -> dict[str, Any]:
    """SPDX 2.3: the image CONTAINS every Debian package and Python distribution in it."""
    hex_ = digest.removeprefix("sha256:")
    image = {
        "SPDXID": "SPDXRef-Image",
        "name": "runnerfleet",
        "versionInfo": version,
        "primaryPackagePurpose": "CONTAINER",
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": False,
        "checksums": [{"algorithm": "SHA256", "checksumValue": hex_}],
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "Apache-2.0",
        "copyrightText": "NOASSERTION",
        "externalRefs": [
            _purl(f"pkg:oci/runnerfleet@sha256%3A{hex_}?repository_url={REPOSITORY}&tag={version}")
        ],
    }
    contents = _deb_packages(debs) + _python_packages(rootfs, lock_hashes(lock))
    return {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": f"runnerfleet-image-{version}",
        "documentNamespace": f"https://github.com/runnerfleet/runnerfleet/spdx/image/{hex_}",
        "creationInfo": {"created": created, "creators": ["Tool: runnerfleet tools/image"]},
        "documentDescribes": ["SPDXRef-Image"],
        "packages": [image, *contents],
        "relationships": [
            {
                "spdxElementId": "SPDXRef-Image",
                "relationshipType": "CONTAINS",
                "relatedSpdxElement": p["SPDXID"],
            }
            for p in contents
        ],
    }


def _put_blob(layout: Path, data: bytes) -> str:
    digest = "sha256:" + _sha256(data)
    (layout / "blobs/sha256" / digest.removeprefix("sha256:")).write_bytes(data)
    return digest


def _dump(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def finish(args: argparse.Namespace) -> None:
    """Write the SBOM, attach it (an OCI 1.1 artifact manifest whose subject is the image, so
    `oras discover` / the referrers API find it after a push), and write the digest file."""
    layout: Path = args.layout
    index = json.loads((layout / "index.json").read_text())
    [image] = [
        m
        for m in index["manifests"]
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == args.tag
    ]
    document = sbom(args.tag, image["digest"], args.created, args.rootfs, args.debs, args.lock)
    data = json.dumps(document, indent=2, sort_keys=True).encode() + b"\n"
    args.sbom.write_bytes(data)
    empty = _put_blob(layout, b"{}")
    artifact = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "artifactType": SPDX_JSON,
        "config": {"mediaType": EMPTY, "digest": empty, "size": 2},
        "layers": [{"mediaType": SPDX_JSON, "digest": _put_blob(layout, data), "size": len(data)}],
        "subject": {
            "mediaType": image["mediaType"],
            "digest": image["digest"],
            "size": image["size"],
        },
        "annotations": {"org.opencontainers.image.created": args.created},
    }
    blob = _dump(artifact)
    index["manifests"].append(
        {
            "mediaType": MANIFEST,
            "artifactType": SPDX_JSON,
            "digest": _put_blob(layout, blob),
            "size": len(blob),
            "annotations": {"org.opencontainers.image.ref.name": f"{args.tag}.sbom"},
        }
    )
    (layout / "index.json").write_bytes(_dump(index))
    args.digest.write_text(image["digest"] + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    etc = sub.add_parser("etc")
    etc.add_argument("--config", type=Path, required=True)
    etc.add_argument("--rootfs", type=Path, required=True)
    etc.add_argument("--debs", type=Path, required=True)
    lock = sub.add_parser("lock")
    lock.add_argument("--report", type=Path, required=True)
    lock.add_argument("--out", type=Path, required=True)
    umoci = sub.add_parser("umoci-args")
    umoci.add_argument("--config", type=Path, required=True)
    umoci.add_argument("--version", required=True)
    umoci.add_argument("--revision", required=True)
    umoci.add_argument("--created", required=True)
    fin = sub.add_parser("finish")
    for flag in ("--layout", "--rootfs", "--debs", "--sbom", "--digest"):
        fin.add_argument(flag, type=Path, required=True)
    fin.add_argument("--lock", type=Path, default=Path(__file__).with_name("requirements.lock"))
    fin.add_argument("--tag", required=True)
    fin.add_argument("--created", required=True)
    args = parser.parse_args()
    if args.command == "etc":
        write_etc(load_config(args.config), args.rootfs, args.debs)
    elif args.command == "lock":
        write_lock(args.report, args.out)
    elif args.command == "umoci-args":
        config = load_config(args.config, args.version, args.revision)
        print("\n".join(umoci_args(config, args.created)))
    else:
        finish(args)


if __name__ == "__main__":
    main()
