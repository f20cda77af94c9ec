"""Build the release artifacts into dist/ (`make release`; docs/install.md, "Release artifacts").

- `runnerfleet-<version>.tgz`: `helm package charts/runnerfleet`, rewritten with fixed file
  times so the same tree gives the same bytes (helm stamps every entry with the current time).
- `install.yaml`: the CRDs, a Namespace and everything the packaged chart renders with its
  default values in NAMESPACE (`helm template --include-crds` of that .tgz), for
  `kubectl apply --server-side -f install.yaml`. Rendered, never hand-written: it cannot drift.
- `SHA256SUMS`: both files' sha256, in `sha256sum -c` format.

The image is pinned by digest in install.yaml when one is known: `--image-digest`, else the
`sha256:<hex>` in dist/image.digest (written by `make image`). The .tgz keeps the tag default
(its values.yaml is the repository's); `--set image.digest=...` pins a Helm install.

Layer: tooling. Runs helm (built by `make cluster-binaries`) and writes files; the functions
above `main` that take and return values are pure (tests/unit/test_release.py).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import os
import re
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "runnerfleet"
NAMESPACE = "runnerfleet-system"
RELEASE = "runnerfleet"  # the release name install.yaml is rendered with (object names)
DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")  # the chart's values.schema.json says the same


class ReleaseError(Exception):
    """A release cannot be built as asked; the message says why and what to do."""


def project_version(pyproject: str) -> str:
    """The package version in pyproject.toml's text."""
    return str(tomllib.loads(pyproject)["project"]["version"])


def version_problems(version: str, chart_yaml: str) -> list[str]:
    """Where Chart.yaml's version or appVersion differ from the package version."""
    chart = yaml.safe_load(chart_yaml)
    return [
        f"Chart.yaml {key} is {chart.get(key)!r}, pyproject.toml's version is {version!r}"
        for key in ("version", "appVersion")
        if str(chart.get(key)) != version
    ]


def resolve_digest(given: str | None, digest_file: Path) -> tuple[str | None, str]:
    """The image digest to pin and where it came from: `given`, else the file, else none."""
    if given:
        digest, source = given.strip(), "IMAGE_DIGEST"
    elif digest_file.is_file():
        digest, source = digest_file.read_text().strip(), str(digest_file)
    else:
        return None, "none (the image tag)"
    if not DIGEST.match(digest):
        raise ReleaseError(f"image digest from {source} is {digest!r}: want sha256:<64 hex>")
    return digest, source


def normalise_tgz(data: bytes, mtime: int) -> bytes:
    """The same chart archive with every entry's time `mtime`, owner root and mode 0644,
    and no time in the gzip header: the bytes depend on the files' contents only."""
    out = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as src,
        gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0) as zipped,
        tarfile.open(fileobj=zipped, mode="w", format=tarfile.USTAR_FORMAT) as dst,
    ):
        for member in src.getmembers():
            if not member.isfile():
                raise ReleaseError(f"unexpected entry in the chart archive: {member.name}")
            body = src.extractfile(member)
            assert body is not None  # a regular file always has a body
            member.mtime, member.mode = mtime, 0o644
            member.uid = member.gid = 0
            member.uname = member.gname = ""
            dst.addfile(member, body)
    return out.getvalue()


def install_yaml(rendered: str, namespace: str, version: str, image: str) -> str:
    """`helm template` output behind a header and the Namespace the objects live in (helm
    renders none): CRDs first (--include-crds puts them there), then the Namespace, so one
    `kubectl apply` creates everything in order."""
    crds, _, rest = rendered.partition("\n---\n# Source: runnerfleet/templates/")
    if not rest:
        raise ReleaseError("helm template rendered no templates after the CRDs")
    namespace_doc = yaml.safe_dump(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {
            "name": namespace, "labels": {"app.kubernetes.io/part-of": "runnerfleet"}}},
        sort_keys=False,
    )  # fmt: skip
    header = (
        f"# runnerfleet {version}: CRDs and the operator in namespace {namespace}.\n"
        f"# Image: {image}\n"
        "# Rendered by `make release` from the packaged chart with its default values; install\n"
        "# with `kubectl apply --server-side -f install.yaml` (docs/install.md).\n"
    )
    templates = f"---\n# Source: runnerfleet/templates/{rest}"
    return f"{header}{crds.rstrip()}\n---\n{namespace_doc}{templates}"


def sha256sums(files: list[Path]) -> str:
    """`sha256sum` output for `files`, by base name (check with `sha256sum -c` in their dir)."""
    return "".join(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n" for p in files)


def helm(*args: str) -> str:
    # Imported here: the script's pure functions above load without the operator package.
    from runnerfleet.localcluster.binaries import helm_binary

    done = subprocess.run([str(helm_binary()), *args], capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip
    if done.returncode != 0:
        raise ReleaseError(f"helm {' '.join(args)} failed:\n{done.stderr}")
    return done.stdout


def build(out: Path, given_digest: str | None, namespace: str) -> list[Path]:
    """Write the artifacts into `out`; the paths written."""
    version = project_version((ROOT / "pyproject.toml").read_text())
    problems = version_problems(version, (CHART / "Chart.yaml").read_text())
    if problems:
        raise ReleaseError("; ".join(problems) + ": make them agree before a release")
    digest, source = resolve_digest(given_digest, out / "image.digest")
    helm("lint", "--strict", str(CHART))
    out.mkdir(parents=True, exist_ok=True)
    helm("package", str(CHART), "--destination", str(out))
    tgz = out / f"runnerfleet-{version}.tgz"
    mtime = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
    tgz.write_bytes(normalise_tgz(tgz.read_bytes(), mtime))
    pin = ["--set", f"image.digest={digest}"] if digest else []
    rendered = helm("template", RELEASE, str(tgz), "--namespace", namespace,
                    "--include-crds", *pin)  # fmt: skip
    deployment = next(
        d
        for d in yaml.safe_load_all(rendered)
        if d and d["kind"] == "Deployment" and d["metadata"]["name"] == RELEASE
    )
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    manifest = out / "install.yaml"
    manifest.write_text(install_yaml(rendered, namespace, version, image))
    sums = out / "SHA256SUMS"
    sums.write_text(sha256sums([tgz, manifest]))
    print(f"image: {image} (digest from {source})")
    return [tgz, manifest, sums]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist")
    parser.add_argument("--image-digest", help="sha256:<hex>; default: <out>/image.digest")
    parser.add_argument("--namespace", default=NAMESPACE)
    args = parser.parse_args(argv)
    try:
        written = build(args.out.resolve(), args.image_digest, args.namespace)
    except ReleaseError as err:
        print(f"release: {err}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
