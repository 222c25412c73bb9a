# A small cluster of hosts on this machine, for the multihost tests (sourced, not run).
#
# Each host is a Linux network namespace with its own loopback and an eth0 at 10.77.<net>.<k>/24,
# the outer end of its veth pair on a private bridge that holds 10.77.<net>.254 in the root namespace.
# Processes entered into a host get their own UTS namespace named shoal-h<k> and a mount namespace
# in which /etc/hosts names every host of the bed (the machine's own /etc/hosts is not touched). TCP
# between hosts crosses real network stacks; nothing is routed off the machine.
#
#   source tests/cluster/testbed.sh
#   testbed_up TAG N NET     # TAG: [a-z0-9]{1,6}, unique per test; NET: 1..250, unique per test
#   testbed_run K CMD...      # runs CMD in host K (foreground)
#   "$TB_ENTER" K CMD... &    # in the background: $! is CMD's own pid (the entry only execs), so
#                             # signals reach it
#   testbed_addr K            # 10.77.NET.K
#   testbed_rate K RATE       # token-bucket rate limit on host K's link, both ways (e.g. 1gbit)
#   testbed_cut K / testbed_heal K
#   testbed_mpirun_args       # options that make OpenMPI's mpirun launch over the bed's hosts
#
# Teardown (every process in the hosts killed, the namespaces and the bridge deleted, the bed's folder
# removed) runs on EXIT, INT and TERM of the sourcing shell, on TESTBED_TIMEOUT_S (default 420 s:
# TERM to that shell), and — if that shell is killed outright (SIGKILL, a ctest timeout) — from a
# guardian process outside its process tree that notices the shell is gone. Names: namespaces
# shoal-TAG-h<k>, links shl-TAG and shl-TAG-<k>; tests/cluster/leftovers.sh checks none remain.
# Needs root, iproute2 (ip, tc), util-linux (nsenter, unshare).

TESTBED_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# Exits 77 (ctest: skipped) when this kernel or user cannot make namespaces, saying why.
testbed_require() {
  if [ "$(id -u)" -ne 0 ]; then echo "SKIP: the multihost test bed needs root (network namespaces)"; exit 77; fi
  local t
  for t in ip tc nsenter unshare flock setsid; do
    command -v "$t" >/dev/null || { echo "SKIP: $t is not installed (bash scripts/setup.sh installs it)"; exit 77; }
  done
  local probe="shoal-probe-$$"
  if ! ip netns add "$probe" 2>/dev/null; then
    echo "SKIP: this kernel refuses network namespaces (ip netns add failed)"; exit 77
  fi
  ip netns del "$probe"
  if ! unshare -u -m true 2>/dev/null; then
    echo "SKIP: this kernel refuses UTS/mount namespaces (unshare -u -m failed)"; exit 77
  fi
}

testbed_up() {  # TAG N NET
  TB_TAG=$1 TB_N=$2 TB_NET=$3
  [[ "$TB_TAG" =~ ^[a-z0-9]{1,6}$ ]] || { echo "testbed_up: TAG must be 1-6 of [a-z0-9]" >&2; return 2; }
  [[ "$TB_N" =~ ^[0-9]+$ && "$TB_N" -ge 1 && "$TB_N" -le 32 ]] || { echo "testbed_up: N in 1..32" >&2; return 2; }
  [[ "$TB_NET" =~ ^[0-9]+$ && "$TB_NET" -ge 1 && "$TB_NET" -le 250 ]] || { echo "testbed_up: NET in 1..250" >&2; return 2; }
  # What a killed earlier run of this tag may have left (its guardian normally removes it).
  local stale
  for stale in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^shoal-$TB_TAG-h[0-9]+$"); do
    local pids; pids=$(ip netns pids "$stale" 2>/dev/null || true)
    if [ -n "$pids" ]; then kill -KILL $pids 2>/dev/null || true; fi
    ip netns del "$stale" 2>/dev/null || true
  done
  ip link del "shl-$TB_TAG" 2>/dev/null || true
  TB_DIR=$(mktemp -d "/tmp/shoal-testbed-$TB_TAG.XXXXXX")
  TB_BRIDGE="shl-$TB_TAG"
  TB_OWNER=$$

  # One teardown script, run by the trap and by the guardian (whichever comes first; flock makes the
  # other wait, and every step tolerates what is already gone).
  {
    echo '#!/usr/bin/env bash'
    echo "exec 9>>'$TB_DIR.lock'; flock 9"
    echo "for k in \$(seq 1 $TB_N); do"
    echo "  ns=shoal-$TB_TAG-h\$k"
    echo "  [ -e /run/netns/\$ns ] || continue"
    echo "  pids=\$(ip netns pids \$ns 2>/dev/null); [ -n \"\$pids\" ] && kill -TERM \$pids 2>/dev/null"
    echo "done"
    echo "for _ in \$(seq 1 30); do"
    echo "  left=0"
    echo "  for k in \$(seq 1 $TB_N); do [ -n \"\$(ip netns pids shoal-$TB_TAG-h\$k 2>/dev/null)\" ] && left=1; done"
    echo "  [ \$left = 0 ] && break; sleep 0.1"
    echo "done"
    echo "for k in \$(seq 1 $TB_N); do"
    echo "  ns=shoal-$TB_TAG-h\$k"
    echo "  for _ in \$(seq 1 50); do  # again until none is left: a dying daemon may still fork"
    echo "    pids=\$(ip netns pids \$ns 2>/dev/null); [ -z \"\$pids\" ] && break"
    echo "    kill -KILL \$pids 2>/dev/null; sleep 0.05"
    echo "  done"
    echo "  ip netns del \$ns 2>/dev/null"
    echo "  ip link del shl-$TB_TAG-\$k 2>/dev/null"
    echo "done"
    echo "ip link del $TB_BRIDGE 2>/dev/null"
    echo "rm -rf '$TB_DIR' '$TB_DIR.lock' '$TB_DIR.teardown'"
    echo "exit 0"
  } >"$TB_DIR/teardown.sh"
  chmod +x "$TB_DIR/teardown.sh"
  cp "$TB_DIR/teardown.sh" "$TB_DIR.teardown"  # outside the folder it removes
  trap 'testbed_down' EXIT
  trap 'testbed_down; exit 143' TERM
  trap 'testbed_down; exit 130' INT

  # The guardian: reparented away from this shell's tree (the subshell exits at once), so a kill of
  # the tree does not reach it; it tears the bed down once this shell is gone.
  ( setsid bash -c 'while kill -0 "$0" 2>/dev/null; do sleep 0.5; done; "$1"' \
      "$TB_OWNER" "$TB_DIR.teardown" </dev/null >/dev/null 2>&1 & )
  # The bed's own deadline: TERM to this shell runs the trap before a ctest timeout would kill it.
  # It holds none of this shell's descriptors (a pipe reader would wait for it), and writes its one
  # line to the shell's stderr through /proc.
  # The shell runs its TERM trap only once its foreground command returns; if that command is stuck
  # (waiting on a host), the deadline tears the bed down itself after 5 s, which ends the command.
  ( setsid bash -c 'end=$((SECONDS + $1)); while [ $SECONDS -lt $end ]; do kill -0 "$0" 2>/dev/null || exit 0; sleep 1; done
      echo "testbed: TESTBED_TIMEOUT_S ($1 s) reached; tearing down" >>"/proc/$0/fd/2"; kill -TERM "$0"
      sleep 5; kill -0 "$0" 2>/dev/null && [ -x "$2" ] && "$2"' \
      "$TB_OWNER" "${TESTBED_TIMEOUT_S:-420}" "$TB_DIR.teardown" </dev/null >/dev/null 2>&1 & )

  mkdir -m 1777 "$TB_DIR/tmp"  # TMPDIR inside the hosts (OpenMPI's session directories): removed with the bed
  : >"$TB_DIR/hosts"
  echo "127.0.0.1 localhost" >>"$TB_DIR/hosts"
  local k
  for k in $(seq 1 "$TB_N"); do echo "10.77.$TB_NET.$k shoal-h$k" >>"$TB_DIR/hosts"; done

  # Frames between hosts are bridged, not routed: keep them out of the machine's iptables (a Docker
  # host's FORWARD policy would drop them) where the kernel has br_netfilter.
  ip link add "$TB_BRIDGE" type bridge nf_call_iptables 0 nf_call_ip6tables 0 2>/dev/null ||
    ip link add "$TB_BRIDGE" type bridge || return 1
  ip addr add "10.77.$TB_NET.254/24" dev "$TB_BRIDGE"
  ip link set "$TB_BRIDGE" up
  for k in $(seq 1 "$TB_N"); do
    local ns="shoal-$TB_TAG-h$k"
    ip netns add "$ns" || return 1
    ip link add "shl-$TB_TAG-$k" type veth peer name eth0 netns "$ns" || return 1
    ip link set "shl-$TB_TAG-$k" master "$TB_BRIDGE"
    ip link set "shl-$TB_TAG-$k" up
    ip -n "$ns" addr add "10.77.$TB_NET.$k/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
  done

  # The wrapper that enters a host: its network, its own hostname, the bed's /etc/hosts. `ip netns
  # exec` is not used: it remounts /sys, which hides the cgroup tree slurmd needs.
  cat >"$TB_DIR/enter" <<EOF
#!/usr/bin/env bash
# enter K CMD...: runs CMD on host K of test bed $TB_TAG
k=\$1; shift
exec nsenter --net=/run/netns/shoal-$TB_TAG-h\$k unshare -u -m --propagation slave \\
  env TMPDIR="$TB_DIR/tmp" bash -c 'hostname "shoal-h\$0"; mount --bind "$TB_DIR/hosts" /etc/hosts; exec "\$@"' "\$k" "\$@"
EOF
  # OpenMPI's rsh agent: "AGENT HOST COMMAND-WORDS..." where HOST is shoal-h<k>.
  cat >"$TB_DIR/mpi-agent" <<EOF
#!/usr/bin/env bash
h=\$1; shift
exec "$TB_DIR/enter" "\${h#shoal-h}" bash -c "\$*"
EOF
  chmod +x "$TB_DIR/enter" "$TB_DIR/mpi-agent"
  TB_ENTER=$TB_DIR/enter

  # Reachable from the root namespace before anything uses it (the first packets can take ~10 ms).
  for k in $(seq 1 "$TB_N"); do
    local ok=0
    for _ in $(seq 1 50); do
      local out
      out=$(testbed_run "$k" bash -c "exec 3<>/dev/tcp/10.77.$TB_NET.254/1" 2>&1 || true)
      if [[ "$out" == *refused* ]]; then ok=1; break; fi
      sleep 0.1
    done
    [ $ok = 1 ] || { echo "testbed_up: host $k cannot reach the bridge" >&2; return 1; }
  done
}

testbed_down() {
  trap - EXIT TERM INT
  [ -n "${TB_TAG:-}" ] || return 0
  [ -x "$TB_DIR.teardown" ] && "$TB_DIR.teardown"
  return 0
}

testbed_run() {  # K CMD...
  local k=$1; shift
  "$TB_DIR/enter" "$k" "$@"
}

testbed_addr() { echo "10.77.$TB_NET.$1"; }

# Rate-limits host K's link both ways with a token bucket (netem is not in every kernel; tbf is).
testbed_rate() {  # K RATE (tc syntax: 1gbit, 500mbit)
  local k=$1 rate=$2
  tc -n "shoal-$TB_TAG-h$k" qdisc replace dev eth0 root tbf rate "$rate" burst 256kb latency 50ms
  tc qdisc replace dev "shl-$TB_TAG-$k" root tbf rate "$rate" burst 256kb latency 50ms
}
testbed_unshape() {  # K
  tc -n "shoal-$TB_TAG-h$1" qdisc del dev eth0 root 2>/dev/null || true
  tc qdisc del dev "shl-$TB_TAG-$1" root 2>/dev/null || true
}
testbed_cut() { ip -n "shoal-$TB_TAG-h$1" link set eth0 down; }
testbed_heal() { ip -n "shoal-$TB_TAG-h$1" link set eth0 up; }

# mpirun options for the bed: hosts by name through the agent, TCP between them on the bed's subnet
# only (shared memory stays within a host), no binding (every "host" shares this machine's cores).
testbed_mpirun_args() {
  echo "--allow-run-as-root --bind-to none --mca plm_rsh_agent $TB_DIR/mpi-agent" \
       "--mca btl tcp,self,vader --mca btl_tcp_if_include 10.77.$TB_NET.0/24" \
       "--mca oob_tcp_if_include 10.77.$TB_NET.0/24"
}
