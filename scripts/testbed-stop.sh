#!/bin/bash
# testbed-stop.sh - stop the daemons scripts/testbed.sh started, by their recorded PIDs only.
# A zombie counts as stopped (PID 1 here reaps slowly). Keys, SLURM state and logs stay in
# $HPC_DIR; env.sh is removed, since its presence means "the testbed is up".
set -uo pipefail
HPC_DIR=${HPC_DIR:-/tmp/hpc-testbed}
HPC_USER=${HPC_USER:-hpcuser}
MFA_PORT=${MFA_PORT:-2223}
# Cancel jobs first: a job's slurmstepd outlives slurmd and would report to the next testbed.
# Also the jobs of the MFA login host's users (testbed.sh step 7).
for user in "$HPC_USER" mfauser totpuser; do
  id "$user" >/dev/null 2>&1 || continue
  if [ -s "$HPC_DIR/pids/slurmctld.pid" ] && scancel --user="$user" 2>/dev/null; then
    for _ in $(seq 100); do
      [ -z "$(squeue -h -u "$user" -t running,completing)" ] && break
      sleep 0.1
    done
  fi
done
# The listeners only: sessions (and ControlMaster connections) through them end with their clients.
for name in sshd-mfa sshd-gw sshd-hpc crond slurmd slurmctld slurmdbd mariadbd munged; do
  pidfile=$HPC_DIR/pids/$name.pid
  [ -s "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  if kill "$pid" 2>/dev/null; then
    for _ in $(seq 50); do ps -o stat= -p "$pid" | grep -qv '^Z' || break; sleep 0.1; done
    echo "[testbed] stopped $name ($pid)"
  fi
  rm -f "$pidfile"
done
# MFA_GATEWAY_ONLY=1 added this rule (see testbed.sh): remove it
if command -v iptables >/dev/null; then
  while iptables -D OUTPUT -o lo -d 127.0.0.2 -p tcp --dport "$MFA_PORT" --syn -m owner \
      ! --uid-owner gwuser -j REJECT --reject-with tcp-reset 2>/dev/null; do :; done
fi
rm -f "$HPC_DIR/env.sh"
