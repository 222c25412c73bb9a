#!/usr/bin/env bash
# The test bed cleans up after itself (label multihost; ctest runs it after the other multihost
# tests): a test shell killed outright (SIGKILL, as a ctest timeout does) and one that runs past
# TESTBED_TIMEOUT_S both leave no namespace, link, process or folder behind; a cut link is a host
# gone and a healed one is back; and, the other multihost tests having run, nothing of any test bed
# is left on this machine.
set -euo pipefail
root=$(realpath "$2")
source "$root/tests/cluster/testbed.sh"
testbed_require
fail() { echo "FAIL $*"; exit 1; }

leftovers() {  # [TAG]: prints whatever of that bed (default: of any bed) still exists
  local tag=${1:-}
  local ns_pat="^shoal-${tag:+$tag-}" link_pat="shl-${tag}"
  ip netns list 2>/dev/null | awk '{print $1}' | grep -E "$ns_pat" | sed 's/^/namespace /' || true
  ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//' | grep -E "^$link_pat" | sed 's/^/link /' || true
  ls -d /tmp/shoal-testbed-"${tag}"* 2>/dev/null | sed 's/^/file /' || true
  [ -z "$tag" ] && { ls -d /tmp/ompi.shoal-h* 2>/dev/null | sed 's/^/file /' || true; }  # MPI outside TMPDIR
  pgrep -af "^shoal-testbed-marker-${tag}" | sed 's/^/process /' || true
}

wait_clean() {  # TAG SECONDS: until nothing of the bed is left
  for _ in $(seq 1 $(($2 * 10))); do
    [ -z "$(leftovers "$1")" ] && return 0
    sleep 0.1
  done
  return 1
}

# A bed whose shell is killed outright: the guardian tears it down.
bash -c '
  source "$0/tests/cluster/testbed.sh"
  testbed_up kill 2 105
  "$TB_ENTER" 1 bash -c "exec -a shoal-testbed-marker-kill sleep 300" &
  "$TB_ENTER" 2 bash -c "exec -a shoal-testbed-marker-kill sleep 300" &
  touch "$1"
  exec sleep 300  # the same pid: the guardian watches it
' "$root" /tmp/shoal-leftovers-ready.$$ >/dev/null 2>&1 &
victim=$!
disown "$victim"  # its death is the test, not news
trap 'kill -KILL "$victim" 2>/dev/null || true' EXIT  # its guardian then tears its bed down
for _ in $(seq 1 100); do [ -e /tmp/shoal-leftovers-ready.$$ ] && break; sleep 0.1; done
rm -f /tmp/shoal-leftovers-ready.$$
[ -n "$(leftovers kill)" ] || fail "the bed under test did not come up"
for _ in $(seq 1 50); do [ "$(pgrep -fc ^shoal-testbed-marker-kill)" = 2 ] && break; sleep 0.1; done
[ "$(pgrep -fc ^shoal-testbed-marker-kill)" = 2 ] || fail "the processes in the bed did not start"
kill -KILL "$victim"
wait_clean kill 10 || fail "10 s after its shell was killed, the bed is still there: $(leftovers kill)"
echo "ok   a test killed with SIGKILL leaves nothing behind (the guardian tore its bed down)"

# A bed that outlives TESTBED_TIMEOUT_S while its shell waits on a command in a host: TERM to the
# shell, and since its trap cannot run before that command returns, the deadline tears the bed down
# itself 5 s later, which ends the command.
start=$(date +%s)
set +e
TESTBED_TIMEOUT_S=3 bash -c '
  source "$0/tests/cluster/testbed.sh"
  testbed_up late 2 106
  "$TB_ENTER" 1 bash -c "exec -a shoal-testbed-marker-late sleep 300" &
  testbed_run 1 sleep 300  # stuck in the foreground: the TERM trap cannot run until it returns
' "$root" >/dev/null 2>>"/tmp/shoal-leftovers-late.$$"  # append: the deadline appends too
rc=$?
set -e
took=$(( $(date +%s) - start ))
msg=$(cat "/tmp/shoal-leftovers-late.$$"); rm -f "/tmp/shoal-leftovers-late.$$"
[ $rc -eq 143 ] && [ $took -le 15 ] || fail "a bed past its timeout: rc=$rc after ${took} s ($msg)"
grep -q "TESTBED_TIMEOUT_S (3 s) reached" <<<"$msg" || fail "the timeout was not reported: $msg"
wait_clean late 10 || fail "after its timeout, the bed is still there: $(leftovers late)"
echo "ok   a test past TESTBED_TIMEOUT_S is stopped and leaves nothing behind (${took} s)"

# Cutting a host's link makes it unreachable, and healing it brings it back (the failure tests use it).
bash -c '
  set -e
  source "$0/tests/cluster/testbed.sh"
  testbed_up cut 2 107
  "$TB_ENTER" 2 python3 -c "
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((\"0.0.0.0\", 7000)); s.listen(8)
while True: s.accept()[0].close()" &
  reach() { testbed_run 1 python3 -c "import socket; socket.create_connection((\"$(testbed_addr 2)\", 7000), timeout=2)" 2>/dev/null; }
  for _ in $(seq 1 50); do reach && break; sleep 0.1; done
  reach || { echo "FAIL host 2 unreachable before the cut"; exit 1; }
  testbed_cut 2
  if reach; then echo "FAIL host 2 still reachable after testbed_cut"; exit 1; fi
  testbed_heal 2
  for _ in $(seq 1 50); do reach && break; sleep 0.1; done
  reach || { echo "FAIL host 2 unreachable after testbed_heal"; exit 1; }
' "$root" || fail "cutting and healing a host's link"
wait_clean cut 10 || fail "the cut test left: $(leftovers cut)"
echo "ok   testbed_cut makes a host unreachable and testbed_heal brings it back"

# Everything the multihost label made is gone.
wait_clean "" 10 || fail "left on this machine by the multihost tests: $(leftovers)"
echo "ok   no test-bed namespace, link, folder or process is left on this machine"
