#!/usr/bin/env bash
# Build runnerfleet's OCI image without a Docker daemon (docs/image.md):
#   1. mmdebstrap --variant=extract: Python 3.11 and its libraries from Debian bookworm,
#      unpacked, no maintainer scripts, no dpkg/tar/shell left in the tree;
#   2. /opt/venv: the project's wheel and the pinned dependencies (tools/image/requirements.lock,
#      with hashes), installed by pip running under the image's own Python (chroot);
#   3. two layers (Debian, then /opt/venv) as deterministic tars (sorted, mtime
#      SOURCE_DATE_EPOCH, uid/gid 0), added with `umoci raw add-layer`; config from
#      tools/image/config.json (the same as the Dockerfile's final stage);
#   4. an SPDX SBOM (Debian packages + Python distributions) beside the layout and attached to
#      it as an artifact manifest whose subject is the image; the manifest digest in
#      dist/image.digest.
#
# Usage: tools/image/build.sh            build dist/image (tag = pyproject version)
#        tools/image/build.sh --lock     regenerate tools/image/requirements.lock, then build
# Needs root (chroot), mmdebstrap, umoci, network to the Debian mirror and PyPI.
set -euo pipefail
cd "$(dirname "$0")/../.."
umask 022
export LC_ALL=C.UTF-8 TZ=UTC

PY=${PYTHON:-.venv/bin/python}
HERE=tools/image
WORK=${IMAGE_WORK:-build/image}
DIST=${IMAGE_DIST:-dist}
LAYOUT=$DIST/image
LOCK=$HERE/requirements.lock
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
# Everything Python 3.11 needs; apt adds the dependencies.
DEBIAN_PACKAGES=python3.11-minimal,libpython3.11-stdlib
# Pulled in only as (pre-)dependencies of packaging tools; nothing at run time uses them
# (the build checks every stdlib extension module still imports without them).
DROP_PACKAGES=(dpkg tar libacl1 libmd0 libselinux1 libpcre2-8-0)

for tool in mmdebstrap umoci chroot "$PY"; do
  command -v "$tool" >/dev/null || { echo "image: '$tool' is missing (apt-get install mmdebstrap umoci)" >&2; exit 2; }
done
[[ $(id -u) == 0 ]] || { echo "image: the build chroots into the rootfs: run as root" >&2; exit 2; }

VERSION=$("$PY" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
REVISION=$(git rev-parse HEAD)
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}
CREATED=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
ROOTFS=$WORK/rootfs
step() { echo "image: $* ($SECONDS s)"; }

rm -rf "$WORK" "$LAYOUT" "$DIST"/image.{digest,spdx.json,tar}
mkdir -p "$WORK/src" "$WORK/wheel" "$DIST"

step "rootfs from Debian bookworm ($DEBIAN_PACKAGES)"
mmdebstrap --quiet --mode=root --variant=extract --format=directory \
  --include="$DEBIAN_PACKAGES" \
  --extract-hook="copy-out /var/cache/apt/archives/ $PWD/$WORK" \
  bookworm "$ROOTFS" \
  "deb $MIRROR bookworm main" "deb $MIRROR bookworm-updates main" \
  "deb $SECURITY_MIRROR bookworm-security main"
mv "$WORK/archives" "$WORK/debs"

step "pruning: packaging tools, docs, device nodes"
for pkg in "${DROP_PACKAGES[@]}"; do
  deb=$(ls "$WORK"/debs/"${pkg}"_*.deb)
  dpkg-deb --fsys-tarfile "$deb" | tar -t | sed 's,^\./,,' | while read -r f; do
    if [[ -n $f && ( -f $ROOTFS/$f || -L $ROOTFS/$f ) ]]; then rm -f "$ROOTFS/$f"; fi
  done
  rm -f "$deb"
done
find "$ROOTFS/usr/share/doc" -mindepth 2 ! -name copyright ! -type d -delete
rm -rf "$ROOTFS"/usr/share/{man,info,locale,lintian,bug,polkit-1,binfmts,menu,dpkg} \
  "$ROOTFS"/var/lib/dpkg "$ROOTFS"/var/cache/* "$ROOTFS"/var/log/* "$ROOTFS"/var/lib/apt \
  "$ROOTFS"/etc/dpkg "$ROOTFS"/etc/apt "$ROOTFS"/dev/* "$ROOTFS"/etc/alternatives
find "$ROOTFS" -depth -type d -empty ! -path "$ROOTFS/tmp" ! -path "$ROOTFS/dev" -delete
mkdir -p "$ROOTFS"/{dev,proc,sys,etc,opt,var/lib/dpkg/status.d}
chmod 1777 "$ROOTFS/tmp"

step "identity files: passwd, group, nsswitch, os-release, package records for scanners"
"$PY" "$HERE/image.py" etc --config "$HERE/config.json" --rootfs "$ROOTFS" --debs "$WORK/debs"

step "the image's Python checks its stdlib extension modules"
chroot "$ROOTFS" /usr/bin/python3.11 -I -c '
import importlib, pathlib, sys
bad = []
for so in sorted(pathlib.Path("/usr/lib/python3.11/lib-dynload").glob("*.so")):
    name = so.name.split(".")[0]
    if name in {"_tkinter", "_curses_panel", "_dbm", "_gdbm"}:
        continue
    try:
        importlib.import_module(name)
    except ImportError as err:
        bad.append(f"{name}: {err}")
sys.exit("\n".join(bad) or None)'

step "the wheel (sources as the Dockerfile copies them)"
git ls-files -z pyproject.toml README.md operator | tar --null -T - -cf - | tar -C "$WORK/src" -xf -
PIP_CONSTRAINT=$HERE/build-constraints.txt \
  "$PY" -m pip wheel --quiet --no-deps --wheel-dir "$WORK/wheel" "$WORK/src"
wheel=$(basename "$WORK"/wheel/runnerfleet-*.whl)

step "/opt/venv with the image's Python"
chroot "$ROOTFS" /usr/bin/python3.11 -I -m venv --without-pip /opt/venv
# The host's pip resolves and downloads (its network settings and CA apply; PIP_FIND_LINKS is
# dropped so only PyPI's files, which the lock's hashes name, are used). The build venv's
# Python is CPython 3.11 on glibc 2.36 amd64 like the image's, so it picks the same wheels.
host_pip() { env -u PIP_FIND_LINKS "$PY" -m pip "$@"; }
if [[ ${1:-} == --lock || ! -f $LOCK ]]; then
  step "resolving dependencies for $LOCK"
  host_pip install --quiet --dry-run --ignore-installed --only-binary=:all: \
    --python-version 3.11 --report "$WORK/report.json" "$WORK/wheel/$wheel"
  "$PY" "$HERE/image.py" lock --report "$WORK/report.json" --out "$LOCK"
fi
host_pip download --quiet --no-deps --only-binary=:all: --require-hashes \
  --python-version 3.11 --dest "$WORK/wheel" -r "$LOCK"
# Installing runs pip (a copy of the build venv's) under the image's interpreter, offline, so
# scripts get the image's shebang (#!/opt/venv/bin/python); removed before the layers are made.
mkdir -p "$ROOTFS/tmp/build/pip"
cp -r "$("$PY" -c 'import pip, os; print(os.path.dirname(pip.__file__))')" "$ROOTFS/tmp/build/pip/"
cp -r "$WORK/wheel" "$LOCK" "$ROOTFS/tmp/build/"
pip_in_image() {
  env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin PYTHONPATH=/tmp/build/pip HOME=/tmp/build \
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_NO_INDEX=1 \
    chroot "$ROOTFS" /opt/venv/bin/python -m pip "$@"
}
pip_in_image install --quiet --no-compile --no-deps --require-hashes \
  --find-links /tmp/build/wheel -r /tmp/build/requirements.lock
pip_in_image install --quiet --no-compile --no-deps "/tmp/build/wheel/$wheel"
pip_in_image check
rm -rf "$ROOTFS/tmp/build"
# pip records where the wheel came from; a build path says nothing to the image's user.
rm -f "$ROOTFS"/opt/venv/lib/python3.11/site-packages/runnerfleet-*.dist-info/direct_url.json
sed -i '/direct_url.json/d' "$ROOTFS"/opt/venv/lib/python3.11/site-packages/runnerfleet-*.dist-info/RECORD

step "bytecode: hash-based .pyc (unchecked: valid whatever the mtimes; nothing writes at run time)"
# The build's own Python runs left timestamp-based .pyc (build-time mtimes): start afresh.
find "$ROOTFS" -name __pycache__ -type d -prune -exec rm -rf {} +
chroot "$ROOTFS" /usr/bin/python3.11 -I -m compileall -q -f -j 1 --invalidation-mode unchecked-hash \
  -x '/(test|tests|idlelib|lib2to3/tests|tkinter|turtledemo)/' \
  /usr/lib/python3.11 /opt/venv/lib/python3.11/site-packages >/dev/null
env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin chroot --userspec=65532:65532 "$ROOTFS" /opt/venv/bin/runnerfleet --version

step "layers: Debian, then /opt/venv"
layer() {  # layer NAME FIND-ARGS...: a tar of the matching rootfs paths, byte-for-byte stable
  (cd "$ROOTFS" && find . -mindepth 1 "${@:2}" -printf '%P\n' | sort) > "$WORK/$1.list"
  tar -C "$ROOTFS" --create --file "$WORK/$1.tar" --no-recursion --verbatim-files-from \
    --files-from "$WORK/$1.list" --format=posix --numeric-owner --owner=0 --group=0 \
    --mtime="@$SOURCE_DATE_EPOCH" --no-acls --no-xattrs --no-selinux \
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime
}
layer debian ! -path ./opt/venv ! -path './opt/venv/*'
layer venv \( -path ./opt/venv -o -path './opt/venv/*' \)

step "OCI layout $LAYOUT:$VERSION"
umoci init --layout "$LAYOUT"
umoci new --image "$LAYOUT:$VERSION"
umoci raw add-layer --image "$LAYOUT:$VERSION" --history.created "$CREATED" \
  --history.created_by "mmdebstrap --variant=extract --include=$DEBIAN_PACKAGES bookworm (pruned)" \
  "$WORK/debian.tar"
umoci raw add-layer --image "$LAYOUT:$VERSION" --history.created "$CREATED" \
  --history.created_by "pip install --require-hashes -r tools/image/requirements.lock $wheel into /opt/venv" \
  "$WORK/venv.tar"
mapfile -t config_args < <("$PY" "$HERE/image.py" umoci-args --config "$HERE/config.json" \
  --version "$VERSION" --revision "$REVISION" --created "$CREATED")
umoci config --image "$LAYOUT:$VERSION" --no-history "${config_args[@]}"
umoci gc --layout "$LAYOUT"

step "SBOM and digest"
"$PY" "$HERE/image.py" finish --layout "$LAYOUT" --tag "$VERSION" --rootfs "$ROOTFS" \
  --debs "$WORK/debs" --created "$CREATED" --sbom "$DIST/image.spdx.json" \
  --digest "$DIST/image.digest"
tar -C "$LAYOUT" --create --file "$DIST/image.tar" --sort=name --format=posix --numeric-owner \
  --owner=0 --group=0 --mtime="@$SOURCE_DATE_EPOCH" \
  --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime .
step "done: $LAYOUT:$VERSION $(cat "$DIST/image.digest")"
