#!/usr/bin/env bash
# Build momcore's compiled core (src_c/*.c and momcore/_core.pyx) with AddressSanitizer and
# UndefinedBehaviorSanitizer and run the test-suite against that build.
#
# Usage: tools/sanitize.sh [--fast] [extra pytest args...]
#   --fast   the CI subset: the tests that drive the C kernels and their Cython wrapper
#            directly -- test_kernel, test_errors, test_sgd, test_properties, test_mlp,
#            test_c_kernels, test_theory_kernel -- leaving out the slower end-to-end files
#            (demo/CLI, datasets, theory, numpy MLP, README, fuzz, concurrency). Measured on
#            the 2-core machine: ~40 s of pytest, ~60 s in all with the venv reused (~90 s
#            when the venv is made anew from pip's cache). The full suite: ~100 s of pytest.
#   (none)   the whole suite, as plain `pytest` selects it (so `-m "not slow"` from
#            pyproject.toml applies), minus the tests listed under "Deselected" below.
#   Anything else is passed to pytest, which runs in the copy of the repo, so paths and node
#   ids are as in the repo: `tools/sanitize.sh --fast -k nesterov -x`,
#   `tools/sanitize.sh -x tests/test_mlp.py`, `tools/sanitize.sh -m slow`. Arguments naming
#   tests/... replace the default selection.
#
# Environment:
#   MOMCORE_SANITIZE_DIR  work directory (default: <repo>/build/sanitize, gitignored). It holds
#                         venv/ (kept and reused while the requirements below are unchanged),
#                         src/ (a fresh copy of the work tree each run, where pytest runs) and
#                         logs/ (the build's and pytest's output, and any sanitizer reports).
#   PYTHON                the interpreter to make the venv with (default: python3).
#
# How:
#   1. A venv with the build deps (setuptools, Cython>=3, numpy>=2, scipy), the test deps
#      (pytest, hypothesis, pytest-benchmark) and matplotlib (the `plot` extra, so that the
#      figure tests, which drive the kernels, run instead of skipping).
#   2. The work tree's files (tracked plus untracked-but-not-ignored, as they are on disk now)
#      are copied to src/, so the generated _core.c and the build never touch the repo and
#      never pick up a stale in-tree build.
#   3. `pip install --no-build-isolation` of that copy into the venv, with CFLAGS/LDFLAGS
#      -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined -g.
#      Note: setup.py appends its own -O3 after CFLAGS, so the extension is sanitized at the
#      optimisation level it ships with; ASan and UBSan are fully effective at -O3.
#      The script checks that the installed _core*.so really links libasan and libubsan.
#   4. The venv's `pytest` script run in src/, as tests/conftest.py asks: a script (unlike
#      `python -m pytest`) does not put its working directory on sys.path, and PYTHONSAFEPATH=1
#      keeps it off for subprocesses too, so `import momcore` finds the sanitized install in the
#      venv; MOMCORE_TEST_INSTALLED=1 makes tests/conftest.py refuse an in-tree import (src/
#      has no built _core anyway). The ASan runtime is LD_PRELOADed (CPython is not built with
#      ASan, and ASan's runtime must be the first library loaded in the process).
#      pytest runs with --capture=sys: Python-level output is captured per test as usual, but
#      what C code writes to file descriptor 2 -- a sanitizer report -- goes straight to the
#      terminal and logs/pytest.log. (With pytest's default --capture=fd a report that aborts
#      the process is lost in a capture file.) ASan reports of every process (pytest, the
#      `python -m momcore` subprocesses, the C test program) are also written to logs/asan.PID
#      by log_path. The run fails if pytest fails or aborts, if any logs/asan.* exists, or if
#      "ERROR: AddressSanitizer" or "runtime error:" shows in pytest's output.
#
# Deselected, and why:
#   - The tests that assert the process's resident memory stays flat (RSS_TESTS below:
#     tests/test_memory.py, tests/test_soak.py, and test_mlp.py's *_does_not_grow_memory).
#     Under ASan freed memory sits in the quarantine (256 MB) and every allocation carries
#     redzones and shadow, so RSS grows by design. (Leaks proper are LeakSanitizer's job,
#     which is off: CPython itself is not leak-clean.) A new RSS test belongs in RSS_TESTS.
#   - tests/test_c_kernels.py::test_c_program_is_memcheck_clean runs the C test program under
#     valgrind; an ASan-instrumented program cannot run under valgrind. The program is instead
#     built with ASan+UBSan here (CC points at a wrapper that adds the flags), and
#     test_c_program_matches_reference_bit_for_bit runs it under the sanitizers.
#
# Sanitizer options, and why:
#   ASAN_OPTIONS  detect_leaks=0          CPython (not built with ASan) leaks by design at exit.
#                 log_path=...            reports from subprocesses whose output a test
#                                         captures still reach us.
#                 (allocator_may_return_null is left at its default 0: no test asks for an
#                 impossible allocation, so an allocation failure is a report, not a
#                 MemoryError.)
#   UBSAN_OPTIONS print_stacktrace=1:halt_on_error=1. (No log_path: gcc 12's libubsan ignores
#                 it when the ASan runtime is loaded and always writes to stderr, hence
#                 --capture=sys. A UBSan report in a subprocess fails its test, whose message
#                 shows the subprocess's stderr.)
#   PYTHONMALLOC=malloc  CPython's small-object allocator (pymalloc) would hide overflows of
#                        the PyMem_Malloc'd buffer tables in _core.pyx inside its arenas; with
#                        plain malloc, ASan puts redzones around each of them.
#   Suppressions: tools/sanitize_suppressions.txt (ASan), empty of rules unless a report inside
#   a third-party library (libgomp, OpenBLAS, numpy, scipy) needs one; see that file.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${MOMCORE_SANITIZE_DIR:-$REPO/build/sanitize}
PYTHON=${PYTHON:-python3}
SUPPRESSIONS=$REPO/tools/sanitize_suppressions.txt

FAST=0
PYTEST_EXTRA=()
for arg in "$@"; do
    if [[ $arg == --fast ]]; then FAST=1; else PYTEST_EXTRA+=("$arg"); fi
done

SAN_FLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined -g"
# Tests that measure the process's resident memory (see "Deselected" above).
RSS_TESTS=(tests/test_memory.py
           tests/test_soak.py
           tests/test_mlp.py::test_compiled_fit_does_not_grow_memory
           tests/test_mlp.py::test_predict_on_varying_row_counts_does_not_grow_memory)
REQUIREMENTS=("setuptools>=68" "wheel" "Cython>=3.0" "numpy>=2.0" "scipy>=1.11"
              "pytest>=7" "hypothesis>=6" "pytest-benchmark>=4" "matplotlib>=3.7")

log() { printf 'sanitize: %s\n' "$*" >&2; }
die() { printf 'sanitize: FAILED: %s\n' "$*" >&2; exit 1; }

command -v gcc >/dev/null || die "gcc not found"
LIBASAN=$(gcc -print-file-name=libasan.so)
LIBUBSAN=$(gcc -print-file-name=libubsan.so)
[[ -f $LIBASAN ]] || die "gcc has no libasan ($LIBASAN); apt-get install libasan8"
[[ -f $LIBUBSAN ]] || die "gcc has no libubsan ($LIBUBSAN); apt-get install libubsan1"
LIBASAN=$(readlink -f "$LIBASAN")
LIBUBSAN=$(readlink -f "$LIBUBSAN")

mkdir -p "$WORK"
VENV=$WORK/venv
SRC=$WORK/src
LOGS=$WORK/logs
START=$SECONDS

# ---------------------------------------------------------------- 1. the venv
STAMP="$("$PYTHON" -c 'import sys; print(sys.version)') | ${REQUIREMENTS[*]}"
if [[ ! -x $VENV/bin/python || ! -f $VENV/.stamp || $(cat "$VENV/.stamp") != "$STAMP" ]]; then
    log "creating the venv $VENV"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q "${REQUIREMENTS[@]}"
    printf '%s' "$STAMP" >"$VENV/.stamp"
else
    log "reusing the venv $VENV"
fi
PY=$VENV/bin/python

# ---------------------------------------------------------------- 2. a copy of the work tree
log "copying the work tree to $SRC"
rm -rf "$SRC" "$LOGS" "$WORK/run"
mkdir -p "$SRC" "$LOGS"
git -C "$REPO" ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' f; do [[ -e $REPO/$f ]] && printf '%s\0' "$f"; done |
    tar -C "$REPO" --null -T - -cf - | tar -C "$SRC" -xf -
[[ -f $SRC/setup.py && -d $SRC/tests ]] || die "the copy of the work tree has no setup.py or tests/"

# ---------------------------------------------------------------- 3. the sanitized build
log "building with $SAN_FLAGS (log: $LOGS/build.log)"
"$PY" -m pip uninstall -q -y momcore >/dev/null 2>&1 || true
if ! (cd "$SRC" && CC=gcc CFLAGS="$SAN_FLAGS" LDFLAGS="-fsanitize=address,undefined" \
        "$PY" -m pip install -v --no-build-isolation --no-deps --no-cache-dir . \
        >"$LOGS/build.log" 2>&1); then
    tail -n 60 "$LOGS/build.log" >&2
    die "the sanitized build failed (full log: $LOGS/build.log)"
fi
SITE=$("$PY" -c 'import sysconfig; print(sysconfig.get_path("platlib"))')
SO=$(ls "$SITE"/momcore/_core*.so 2>/dev/null | head -n 1 || true)
[[ -n $SO ]] || die "no momcore/_core*.so installed in $SITE"
NEEDED=$(readelf -d "$SO" | grep NEEDED || true)
grep -q 'libasan' <<<"$NEEDED" || die "$SO does not link libasan: the build is not sanitized"
grep -q 'libubsan' <<<"$NEEDED" || die "$SO does not link libubsan: the build is not sanitized"
grep -q -- '-fsanitize=address,undefined' "$LOGS/build.log" ||
    die "the compiler commands in $LOGS/build.log do not carry the sanitizer flags"

# The C test program of tests/test_c_kernels.py is compiled with $CC: a wrapper adds the
# sanitizer flags, and drops LD_PRELOAD so the compiler itself does not run on the ASan runtime.
CCWRAP=$WORK/cc-sanitize
cat >"$CCWRAP" <<EOF
#!/bin/sh
unset LD_PRELOAD
exec gcc "\$@" $SAN_FLAGS
EOF
chmod +x "$CCWRAP"

# ---------------------------------------------------------------- 4. the tests
if ((FAST)); then
    SELECTION=(tests/test_kernel.py tests/test_errors.py tests/test_sgd.py
               tests/test_sgd_groups.py tests/test_step_groups.py tests/test_registry.py
               tests/test_properties.py tests/test_mlp.py tests/test_losses_c.py
               tests/test_training.py tests/test_c_kernels.py tests/test_theory_kernel.py)
else
    SELECTION=(tests)
fi
prev=
for arg in "${PYTEST_EXTRA[@]}"; do
    if [[ $arg =~ ^tests(/|::|$) && ! $prev =~ ^(-k|-m|--deselect|-p|-o)$ ]]; then
        SELECTION=()   # the caller chose the tests
    fi
    prev=$arg
done
# Node ids relative to the rootdir (src/, where pyproject.toml is); see "Deselected" above.
DESELECT=()
for id in "${RSS_TESTS[@]}" tests/test_c_kernels.py::test_c_program_is_memcheck_clean; do
    DESELECT+=(--deselect "$id")
done

ASAN_OPTS="detect_leaks=0:log_path=$LOGS/asan:symbolize=1:print_suppressions=0"
ASAN_OPTS+=":suppressions=$SUPPRESSIONS"
UBSAN_OPTS="print_stacktrace=1:halt_on_error=1"

log "running pytest ($( ((FAST)) && echo fast subset || echo full suite )); log: $LOGS/pytest.log"
set +e
(cd "$SRC" &&
    env LD_PRELOAD="$LIBASAN $LIBUBSAN" \
        ASAN_OPTIONS="$ASAN_OPTS" UBSAN_OPTIONS="$UBSAN_OPTS" \
        PYTHONMALLOC=malloc MOMCORE_TEST_INSTALLED=1 CC="$CCWRAP" \
        PYTHONSAFEPATH=1 PYTHONDONTWRITEBYTECODE=1 PYTHONPATH= \
        "$VENV/bin/pytest" -p no:cacheprovider --capture=sys "${SELECTION[@]}" "${DESELECT[@]}" \
        "${PYTEST_EXTRA[@]}") 2>&1 | tee "$LOGS/pytest.log"
PYTEST_RC=${PIPESTATUS[0]}
set -e

# ---------------------------------------------------------------- 5. the verdict
shopt -s nullglob
REPORT_FILES=("$LOGS"/asan.*)
shopt -u nullglob
REPORTS=0
for f in "${REPORT_FILES[@]}" "$LOGS/pytest.log"; do
    n=$(grep -c -E 'ERROR: AddressSanitizer|runtime error:|ERROR: LeakSanitizer|WARNING: AddressSanitizer' "$f" || true)
    REPORTS=$((REPORTS + n))
done
if ((${#REPORT_FILES[@]})); then
    for f in "${REPORT_FILES[@]}"; do
        printf '\n===== sanitizer report %s (first 200 lines) =====\n' "$f" >&2
        head -n 200 "$f" >&2
    done
    # a report file with no recognised header is still a report
    ((REPORTS > 0)) || REPORTS=${#REPORT_FILES[@]}
fi

SUMMARY=$(grep -E '(passed|failed|errors?|skipped|deselected|no tests ran).* in [0-9.]+s' \
              "$LOGS/pytest.log" | tail -n 1 | sed -E 's/^=+ //; s/ =+$//; s/ in [0-9.]+s.*$//' || true)
[[ -n $SUMMARY ]] || SUMMARY="pytest ended without a summary (aborted?)"
ELAPSED=$((SECONDS - START))
if ((PYTEST_RC == 0 && REPORTS == 0)); then
    echo "sanitize: $SUMMARY, 0 sanitizer reports (${ELAPSED}s in all)"
    exit 0
fi
echo "sanitize: FAILED: $SUMMARY, pytest exit code $PYTEST_RC, $REPORTS sanitizer reports" \
     "(logs in $LOGS)"
exit 1
