#!/usr/bin/env bash
# Runs moto 5.2.1's own tests for CodeCommit, CodeBuild, CodeDeploy and CodePipeline, in
# moto's server mode, against a real `slipway server` — a fresh one for every test — and
# compares the outcomes with tests/moto/expected_failures.txt (see slipway_moto.py, the
# pytest plugin that starts the servers and does the comparison).
#
#   bash tests/moto/run.sh [pytest arguments, e.g. -k codecommit]
#
# Environment:
#   SLIPWAY_BIN                   the binary (default: target/debug/slipway of this repository)
#   SLIPWAY_MOTO_CACHE            where the sdist and the extracted tests are kept
#                                 (default: $TMPDIR/slipway-moto, else /tmp/slipway-moto)
#   SLIPWAY_MOTO_IGNORE_EXPECTED  1: ignore expected_failures.txt (plain pytest outcomes)
#   SLIPWAY_REGION, SLIPWAY_LOG…  passed on to every server
#   PYTHON                        the interpreter (default: python3)
#
# Installs moto 5.2.1 (and pytest) with pip when missing, keeping the installed botocore and
# boto3 where they are. moto's tests are downloaded and run, never copied into this tree.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PY=${PYTHON:-python3}
MOTO_VERSION=5.2.1
# sha256 of moto-5.2.1.tar.gz as PyPI serves it (pip checks it with --require-hashes).
MOTO_SDIST_SHA256=ccb2f3e1dfa82e50e054bda98b0be708d244d2668364dcc1d45e8d3de6091bde
# moto's tests/ files these test directories need: tests/__init__.py is the package
# test_codedeploy and test_codepipeline belong to (it also sets moto's test-wide config),
# tests/conftest.py is moto's own top-level conftest, loaded as in moto's CI.
MOTO_TEST_PATHS=(tests/__init__.py tests/conftest.py
  tests/test_codecommit tests/test_codebuild tests/test_codedeploy tests/test_codepipeline)
CACHE=${SLIPWAY_MOTO_CACHE:-${TMPDIR:-/tmp}/slipway-moto}
SDIST=$CACHE/moto-$MOTO_VERSION.tar.gz
SRC=$CACHE/moto-$MOTO_VERSION-tests

export SLIPWAY_BIN=${SLIPWAY_BIN:-$ROOT/target/debug/slipway}
case $SLIPWAY_BIN in /*) ;; *) SLIPWAY_BIN=$ROOT/$SLIPWAY_BIN ;; esac
[ -x "$SLIPWAY_BIN" ] || { echo "run.sh: no slipway binary at $SLIPWAY_BIN (set SLIPWAY_BIN)" >&2; exit 2; }

# 1. moto (the tests import it) and pytest; botocore/boto3 stay at the installed versions.
if ! "$PY" -c "import moto, sys; sys.exit(moto.__version__ != '$MOTO_VERSION')" 2>/dev/null; then
  pins=()
  for pkg in botocore boto3; do
    if v=$("$PY" -c "import $pkg; print($pkg.__version__)" 2>/dev/null); then pins+=("$pkg==$v"); fi
  done
  echo "run.sh: installing moto $MOTO_VERSION (with ${pins[*]:-botocore/boto3 as pip picks})"
  "$PY" -m pip install -q "moto==$MOTO_VERSION" ${pins[@]+"${pins[@]}"}
fi
if ! "$PY" -c "import pytest" 2>/dev/null; then
  "$PY" -m pip install -q pytest
fi

# 2. The sdist, fetched once into the cache and checked against its hash.
mkdir -p "$CACHE"
if ! echo "$MOTO_SDIST_SHA256  $SDIST" | sha256sum -c --status 2>/dev/null; then
  echo "run.sh: downloading the moto $MOTO_VERSION sdist into $CACHE"
  dl=$(mktemp -d "$CACHE/download.XXXXXX")
  echo "moto==$MOTO_VERSION --hash=sha256:$MOTO_SDIST_SHA256" > "$dl/requirements.txt"
  "$PY" -m pip download -q --no-deps --no-binary :all: --require-hashes \
    -r "$dl/requirements.txt" -d "$dl"
  mv -f "$dl/moto-$MOTO_VERSION.tar.gz" "$SDIST"
  rm -rf "$dl"
  echo "$MOTO_SDIST_SHA256  $SDIST" | sha256sum -c --status
fi

# 3. Only the four services' tests (and what they import), extracted once.
if [ ! -f "$SRC/.complete" ]; then
  tmp=$(mktemp -d "$CACHE/extract.XXXXXX")
  tar -xzf "$SDIST" -C "$tmp" --strip-components=1 "${MOTO_TEST_PATHS[@]/#/moto-$MOTO_VERSION/}"
  touch "$tmp/.complete"
  rm -rf "$SRC"
  mv "$tmp" "$SRC"
fi

# 4. pytest in the extracted tree, with our plugin; no ini file from anywhere else. The four
#    directories, unless the arguments name tests themselves (tests/test_codebuild/…::test_x).
paths=(tests/test_codecommit tests/test_codebuild tests/test_codedeploy tests/test_codepipeline)
for arg in "$@"; do
  case $arg in tests/*) paths=() ;; esac
done
summary=$(mktemp)
trap 'rm -f "$summary"' EXIT
cd "$SRC"
set +e
SLIPWAY_MOTO_SUMMARY=$summary PYTHONPATH="$HERE${PYTHONPATH:+:$PYTHONPATH}" \
  "$PY" -m pytest -c /dev/null --rootdir "$SRC" --confcutdir "$SRC" -p slipway_moto \
  -p no:cacheprovider -q "${paths[@]}" "$@"
rc=$?
set -e
echo
cat "$summary" 2>/dev/null || true
exit $rc
