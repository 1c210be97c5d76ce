#!/bin/bash
# testbed.sh - a one-node "HPC cluster" for labctl's integration tests (Debian 12, as root, no systemd):
# munge + slurmctld + slurmd (partition "debug"), sshd on 127.0.0.1:$SSH_PORT with key-only login for
# $HPC_USER, and cron. Safe to re-run: packages already installed and daemons already running are left
# alone, so a second run is a quick no-op. SLURM settings apply when slurmctld starts; to change them,
# run scripts/testbed-stop.sh first.
#   Knobs: HPC_DIR=/tmp/hpc-testbed  HPC_USER=hpcuser  SSH_PORT=2222  SLURM_CPUS=8
#   Use:   source "$HPC_DIR/env.sh"; ssh -F "$HPC_SSH_CONFIG" hpc sinfo
set -euo pipefail
HPC_DIR=${HPC_DIR:-/tmp/hpc-testbed}
HPC_USER=${HPC_USER:-hpcuser}
SSH_PORT=${SSH_PORT:-2222}
SLURM_CPUS=${SLURM_CPUS:-8}
PIDS=$HPC_DIR/pids KEYS=$HPC_DIR/keys SLURM_DIR=$HPC_DIR/slurm
mkdir -p "$PIDS" "$KEYS" "$SLURM_DIR"/{state,spool,log}

say() { echo "[testbed] $*"; }
# A daemon is alive if its pidfile names a process that is not a zombie (PID 1 here reaps slowly).
alive() { [ -s "$1" ] && ps -o stat= -p "$(cat "$1")" | grep -qv '^Z'; }
wait_for() { # wait_for SHELL-CONDITION: poll for up to 15 s
  local _
  for _ in $(seq 150); do eval "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "[testbed] timed out waiting for: $1" >&2
  exit 1
}
start() { # start NAME PIDFILE READY-CONDITION COMMAND...: start unless running, wait, record the PID
  local name=$1 pidfile=$2 ready=$3
  shift 3
  if alive "$pidfile"; then
    say "$name already running (pid $(cat "$pidfile"))"
  else
    "$@"
    wait_for "alive $pidfile && $ready"
    say "$name started (pid $(cat "$pidfile"))"
  fi
  cp "$pidfile" "$PIDS/$name.pid"
}

# 1. Packages: install only what is missing. policy-rc.d stops the postinst scripts starting daemons.
PKGS=(slurmctld slurmd slurm-client munge openssh-server openssh-client rsync cron sshfs fuse3
      python3-numpy python3-scipy python3-h5py)  # the last three: what pipelines/ needs on a cluster
missing=()
for p in "${PKGS[@]}"; do
  dpkg -s "$p" 2>/dev/null | grep -q '^Status: install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  say "installing ${missing[*]}"
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
    >"$HPC_DIR/apt.log" 2>&1 || { tail "$HPC_DIR/apt.log" >&2; exit 1; }
fi

# 2. munge (SLURM's authentication)
[ -s /etc/munge/munge.key ] || mungekey --create --keyfile=/etc/munge/munge.key
chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
install -d -o munge -g munge -m 755 /run/munge
start munged /run/munge/munged.pid 'munge -n | unmunge' runuser -u munge -- /usr/sbin/munged

# 3. The cluster user: no password (not locked, so sshd accepts its key)
id "$HPC_USER" >/dev/null 2>&1 || useradd -m -s /bin/bash -p '*' "$HPC_USER"

# 4. SLURM. No cgroups without systemd: Linux process tracking, no task plugin, no accounting.
# Jobs start at once (no scheduler delay), stay visible in squeue for an hour, and their final
# state is appended to the jobcomp file that `sacct -c` reads (there is no slurmdbd).
if ! alive /run/slurmctld.pid; then
  MEM=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
  cat >/etc/slurm/slurm.conf <<EOF
ClusterName=testbed
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$SLURM_DIR/state
SlurmdSpoolDir=$SLURM_DIR/spool
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$SLURM_DIR/log/slurmctld.log
SlurmdLogFile=$SLURM_DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
SlurmdParameters=config_overrides
ReturnToService=2
JobCompType=jobcomp/filetxt
JobCompLoc=$SLURM_DIR/log/jobcomp.log
MinJobAge=3600
KillWait=5
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$SLURM_CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
fi
start slurmctld /run/slurmctld.pid 'scontrol ping | grep -q UP' slurmctld
start slurmd /run/slurmd.pid 'sinfo -h -N -o %T | grep -Eq "idle|mixed|allocated"' slurmd -N localhost
# slurmctld resets the jobcomp file to 0644 at each start, but non-root `sacct -c` opens it for writing.
chmod 0666 "$(scontrol show config | sed -n 's/^JobCompLoc *= *//p')"

# 5. sshd: key-only login for $HPC_USER; the key and known_hosts stay in $KEYS
ssh-keygen -A >/dev/null
install -d -m 755 /run/sshd
[ -f "$KEYS/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C labctl-testbed -f "$KEYS/id_ed25519"
install -d -m 700 -o "$HPC_USER" -g "$HPC_USER" "/home/$HPC_USER/.ssh"
install -m 600 -o "$HPC_USER" -g "$HPC_USER" "$KEYS/id_ed25519.pub" "/home/$HPC_USER/.ssh/authorized_keys"
for t in ed25519 ecdsa rsa; do
  echo "[127.0.0.1]:$SSH_PORT $(cut -d' ' -f1,2 "/etc/ssh/ssh_host_${t}_key.pub")"
done >"$KEYS/known_hosts"
start sshd-hpc /run/sshd-hpc.pid true /usr/sbin/sshd -p "$SSH_PORT" -o ListenAddress=127.0.0.1 \
  -o AuthenticationMethods=publickey -o PasswordAuthentication=no \
  -o PidFile=/run/sshd-hpc.pid -E "$HPC_DIR/sshd.log"
cat >"$HPC_DIR/ssh_config" <<EOF
Host hpc
  HostName 127.0.0.1
  Port $SSH_PORT
  User $HPC_USER
  IdentityFile $KEYS/id_ed25519
  IdentitiesOnly yes
  UserKnownHostsFile $KEYS/known_hosts
  StrictHostKeyChecking yes
  BatchMode yes
EOF
wait_for "ssh -F $HPC_DIR/ssh_config hpc true"

# 6. cron (the watchdog runs from a crontab); /dev/fuse open to non-root sshfs
start crond /run/crond.pid true /usr/sbin/cron
[ ! -e /dev/fuse ] || chmod 0666 /dev/fuse

# 7. env.sh last: its presence means the testbed is ready
cat >"$HPC_DIR/env.sh.tmp" <<EOF
export HPC_SSH_HOST=127.0.0.1 HPC_SSH_PORT=$SSH_PORT HPC_SSH_USER=$HPC_USER
export HPC_SSH_KEY=$KEYS/id_ed25519 HPC_KNOWN_HOSTS=$KEYS/known_hosts HPC_SSH_CONFIG=$HPC_DIR/ssh_config
EOF
mv "$HPC_DIR/env.sh.tmp" "$HPC_DIR/env.sh"
say "ready: source $HPC_DIR/env.sh; ssh -F $HPC_DIR/ssh_config hpc sinfo"
