#!/usr/bin/env bash
# system-packages.sh: the Debian packages the test suite needs, in one list (used by `make test`,
# `make lint` and .ci/run).
#
#   tools/system-packages.sh            install what is missing (root + apt-get), else exit 3 at once
#                                       with the exact command to run
#   tools/system-packages.sh --check    only report; exit 3 when something is missing
#
# MLOPS_DOCKER_TESTS=0 leaves out what only the Docker image and rehearsal tests need (docker.io,
# debootstrap). Exit codes: 0 all present, 3 missing and not installable here.
set -euo pipefail

check_only=0
[ "${1:-}" = "--check" ] && check_only=1

missing=()
have() { command -v "$1" >/dev/null 2>&1; }
have rsync || missing+=(rsync)              # gitlab-ci-local copies each job's workspace with rsync
have git || missing+=(git)
have make || missing+=(make)
# PostgreSQL server binaries (initdb, pg_ctl): the SQL ingest tests start a real server on 127.0.0.1
if ! have initdb && ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  missing+=(postgresql)
fi
have npm || missing+=(nodejs npm)           # lint hooks (npm-groovy-lint) and gitlab-ci-local
have java || missing+=(default-jre-headless) # npm-groovy-lint runs on a JVM
# monitoring: promtool (rule tests, dashboard PromQL) and a live Prometheus, the Pushgateway the drift
# job pushes to, amtool (Alertmanager config check) and a live Alertmanager
have promtool || missing+=(prometheus)
have prometheus-pushgateway || missing+=(prometheus-pushgateway)
have amtool || missing+=(prometheus-alertmanager)
# QEMU user-mode emulation: tests/e2e/test_reproducible.py runs the stages on an emulated CPU of another
# vendor (the CPUID every library dispatches on), to prove the outputs are the same bytes
have qemu-x86_64 || missing+=(qemu-user)
if [ "${MLOPS_DOCKER_TESTS:-1}" != "0" ]; then
  # Docker engine (started by the tests themselves, no bridge network) and debootstrap for its base image
  have dockerd || missing+=(docker.io)
  have debootstrap || missing+=(debootstrap)
fi

if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi

cmd="apt-get update && apt-get install -y --no-install-recommends ${missing[*]}"
if [ "$check_only" = 1 ] || [ "$(id -u)" != 0 ] || ! have apt-get; then
  echo "system-packages: missing Debian packages: ${missing[*]}" >&2
  echo "system-packages: install them with:  sudo sh -c '$cmd'" >&2
  echo "system-packages: (or MLOPS_DOCKER_TESTS=0 to leave out the Docker tests: docker.io, debootstrap)" >&2
  exit 3
fi

echo "system-packages: installing Debian packages: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
