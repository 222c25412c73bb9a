#!/usr/bin/env bash
# Installs every Debian package shoal needs to build and test. Idempotent and non-interactive:
# packages already present are not touched, so a second run costs about a second.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git
  libyaml-cpp-dev nlohmann-json3-dev libcli11-dev
  libgtest-dev libgmock-dev   # GTest's CMake package also names the gmock libraries
  clang libclang-rt-14-dev   # libFuzzer targets (tests/fuzz)
  openmpi-bin libopenmpi-dev  # the CPU data plane (comm/mpi) and mpirun for the mpi tests
  libboost-dev               # Asio + Beast (header-only): the coordinator's HTTP server and control plane
  libpcre2-dev libicu-dev    # tokenizer: Unicode-property pre-split regexes, Unicode normalization
  procps                     # pgrep, for the stalled-rank test (tests/cli/worker_test.sh)
  curl                       # the README's first request
  slurmctld slurmd slurm-client munge  # a real single-machine Slurm for the slurm test (not slurm-wlm: ~35 packages)
  iproute2 util-linux        # ip, tc, nsenter, unshare: hosts as network namespaces (tests/cluster)
  nftables                   # packet loss on a test-bed host's link (tests/cluster/chaos_hosts_test.sh)
  python3 python3-venv       # test helpers (and the openai SDK's venv below); the reference generator needs torch, see tools/reference
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: all ${#packages[@]} packages present"
fi

# The official openai Python SDK, for the OpenAI-parity e2e test (tests/e2e/openai_sdk_test.py), in a
# venv of the checkout's own (.venv-test, git-ignored), pinned. Without PyPI the test is skipped.
repo=$(cd "$(dirname "$0")/.." && pwd)
venv=$repo/.venv-test
if ! "$venv/bin/python" -c "import openai" 2>/dev/null; then
  if python3 -m venv "$venv" && "$venv/bin/pip" install -q --disable-pip-version-check "openai==3.63.0"; then
    echo "setup: openai SDK installed in $venv"
  else
    echo "setup: could not install the openai SDK (no PyPI?); tests/e2e/openai_sdk_test.py will be skipped"
  fi
else
  echo "setup: openai SDK present in $venv"
fi
