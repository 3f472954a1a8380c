#!/usr/bin/env bash
# Runs every check and test Slipway has, on a fresh Debian machine or a developer's:
# installs what is missing (git, aws-cli, boto3, pytest), then code generation freshness,
# formatting, lints, Rust tests and the compatibility suite with the real aws-cli/boto3/git.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# Pinned to the botocore whose models the API layer is generated from.
BOTOCORE=1.43.11
AWSCLI=1.45.11
# Playwright drives the system's Chromium (its own browser download cannot work here).
PLAYWRIGHT=1.65.3

step "checking tools"
missing=""
command -v git >/dev/null 2>&1 || missing="$missing git"
# Builds run in sandboxes made by an OCI runtime (crates/codebuild).
command -v runc >/dev/null 2>&1 || missing="$missing runc"
# The registry-pull test runs a local registry and pushes to it with skopeo.
command -v docker-registry >/dev/null 2>&1 || missing="$missing docker-registry"
command -v skopeo >/dev/null 2>&1 || missing="$missing skopeo"
# CodeDeploy's blue/green test moves traffic on a real nginx (found in /usr/sbin) …
PATH=$PATH:/usr/sbin:/sbin
command -v nginx >/dev/null 2>&1 || missing="$missing nginx"
# … and on a real HAProxy (reloaded by tests/compat/fixtures/haproxy-reload.sh, with pgrep).
command -v haproxy >/dev/null 2>&1 || missing="$missing haproxy"
command -v pgrep >/dev/null 2>&1 || missing="$missing procps"
# Agents run as separate hosts in network namespaces (unshare, nsenter, ip).
command -v ip >/dev/null 2>&1 || missing="$missing iproute2"
# The console is tested in Debian's Chromium, driven by Playwright.
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
if [ -n "$missing" ]; then
  step "installing$missing"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing
fi
if ! python3 -c "import boto3, botocore, pytest, playwright; assert botocore.__version__ == '$BOTOCORE'" 2>/dev/null \
   || ! command -v aws >/dev/null 2>&1; then
  step "installing aws-cli $AWSCLI, boto3/botocore $BOTOCORE, pytest and Playwright $PLAYWRIGHT"
  python3 -m pip install --quiet --disable-pip-version-check \
    "awscli==$AWSCLI" "botocore==$BOTOCORE" "boto3==$BOTOCORE" pytest "playwright==$PLAYWRIGHT" 2>&1 | grep -v "Running pip as the 'root' user" || true
fi
git --version
runc --version | head -1
aws --version

step "generated code is current"
cargo xtask codegen --check

step "formatting"
cargo fmt --all -- --check

step "lints"
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "building"
cargo build --workspace --quiet

step "rust tests"
cargo test --workspace --quiet

step "compatibility suite (aws-cli, boto3, git)"
python3 -m pytest tests/compat -q -p no:cacheprovider

# moto 5.2.1's own tests for the four services, in server mode, against the debug binary;
# outcomes are compared with tests/moto/expected_failures.txt both ways.
step "moto's CodeCommit/CodeBuild/CodeDeploy/CodePipeline tests (server mode)"
SLIPWAY_BIN=target/debug/slipway bash tests/moto/run.sh
