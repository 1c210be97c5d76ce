#!/bin/bash
# testbed.sh - a one-node "HPC cluster" for labctl's integration tests (Debian 12, as root, no systemd):
# munge + slurmctld + slurmd (partition "debug") with accounting (MariaDB + slurmdbd: plain `sacct`,
# MaxRSS/TotalCPU from jobacct_gather/linux, a QOS that caps submitted jobs), sshd on 127.0.0.1:$SSH_PORT with key-only login for
# $HPC_USER, and cron. Also an MPCDF-like login host (sshd on $MFA_PORT: no keys, password + one-time
# password through PAM) and a gateway in front of it (sshd on $GW_PORT, also password + OTP) for
# ProxyJump. Safe to re-run: packages already installed and daemons already running are left
# alone, so a second run is a quick no-op. SLURM settings apply when slurmctld starts; to change them,
# run scripts/testbed-stop.sh first.
#   Knobs: HPC_DIR=/tmp/hpc-testbed  HPC_USER=hpcuser  SSH_PORT=2222  SLURM_CPUS=8
#          WITH_DBD=1 (0: no MariaDB/slurmdbd; finished jobs only in the jobcomp log, `sacct -c`)
#          MFA_PORT=2223  GW_PORT=2224  MFA_GATEWAY_ONLY=0 (1: the login host listens on 127.0.0.2 and
#          an iptables owner rule lets only the gateway's user connect to it, as from outside MPG)
#   Use:   source "$HPC_DIR/env.sh"; ssh -F "$HPC_SSH_CONFIG" hpc sinfo
set -euo pipefail
HPC_DIR=${HPC_DIR:-/tmp/hpc-testbed}
HPC_USER=${HPC_USER:-hpcuser}
SSH_PORT=${SSH_PORT:-2222}
SLURM_CPUS=${SLURM_CPUS:-8}
MFA_PORT=${MFA_PORT:-2223}
GW_PORT=${GW_PORT:-2224}
MFA_GATEWAY_ONLY=${MFA_GATEWAY_ONLY:-0}
WITH_DBD=${WITH_DBD:-1}
PIDS=$HPC_DIR/pids KEYS=$HPC_DIR/keys SLURM_DIR=$HPC_DIR/slurm OATH_DIR=$HPC_DIR/oath
mkdir -p "$PIDS" "$KEYS" "$SLURM_DIR"/{state,spool,log}
# The MFA accounts: fixed test values (a throw-away testbed). mfauser and gwuser have counter-based
# (HOTP) seeds, since tests log in often and pam_oath refuses a time-based code used twice;
# totpuser has a time-based (TOTP, 30 s) seed for the one test of a real TOTP login.
MFA_USER=mfauser MFA_PASSWORD=mfa-test-pw MFA_SEED=3132333435363738393031323334353637383930
TOTP_USER=totpuser TOTP_PASSWORD=totp-test-pw TOTP_SEED=00112233445566778899aabbccddeeff00112233
GW_USER=gwuser GW_PASSWORD=gw-test-pw GW_SEED=a1b2c3d4e5f60718293a4b5c6d7e8f9001122334
OATH_USERS=$OATH_DIR/users.oath
if [ "$MFA_GATEWAY_ONLY" = 1 ]; then MFA_ADDR=127.0.0.2; else MFA_ADDR=127.0.0.1; fi

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
      libpam-oath oathtool
      python3-numpy python3-scipy python3-h5py)  # the last three: what pipelines/ needs on a cluster
[ "$MFA_GATEWAY_ONLY" != 1 ] || PKGS+=(iptables)
[ "$WITH_DBD" != 1 ] || PKGS+=(mariadb-server slurmdbd)
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

# 3. The cluster user: no password (not locked, so sshd accepts its key); and the login host's
# users (step 7 sets their passwords). All exist before slurmctld starts: it maps the accounting's
# users to uids when it loads them, and one missing then is refused every job ("Invalid account").
id "$HPC_USER" >/dev/null 2>&1 || useradd -m -s /bin/bash -p '*' "$HPC_USER"
for user in "$MFA_USER" "$TOTP_USER" "$GW_USER"; do
  id "$user" >/dev/null 2>&1 || useradd -m -s /bin/bash "$user"
done

# 4. SLURM. No cgroups without systemd: Linux process tracking, no task plugin. Jobs start at once
# (no scheduler delay), stay visible in squeue for an hour, and their final state is appended to
# the jobcomp file that `sacct -c` reads. With WITH_DBD=1 (4a) slurmdbd keeps accounting as on a
# real cluster: jobacct_gather/linux samples each step every 2 s (MaxRSS, TotalCPU), and
# OverMemoryKill kills a step whose RSS exceeds its --mem (the nearest SLURM comes without cgroups).
# Limits are enforced: QOS `capped` allows 2 submitted jobs per user (account `capped`), and the
# association of account `assoccap` allows 2 (MaxSubmitJobs): sbatch is refused beyond them.
ACCT_USERS=("$HPC_USER" "$MFA_USER" "$TOTP_USER" "$GW_USER" root)
if [ "$WITH_DBD" = 1 ]; then
  ACCOUNTING="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageEnforce=limits,qos
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=2
JobAcctGatherParams=OverMemoryKill"
  SELECT=CR_CPU_Memory  # memory is allocated (a job without --mem gets DefMemPerCPU per CPU)
else
  ACCOUNTING="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
  SELECT=CR_CPU
fi
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
$ACCOUNTING
SelectType=select/cons_tres
SelectTypeParameters=$SELECT
DefMemPerCPU=$((MEM / SLURM_CPUS))
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
if [ "$WITH_DBD" = 1 ]; then  # 4a. MariaDB (socket only) and slurmdbd, before slurmctld
  install -d -o mysql -g mysql /run/mysqld
  start mariadbd /run/mysqld/mysqld.pid "mariadb -e 'select 1'" sh -c "setsid /usr/sbin/mariadbd \
    --user=mysql --skip-networking --socket=/run/mysqld/mysqld.sock --pid-file=/run/mysqld/mysqld.pid \
    --log-error=$HPC_DIR/mariadb.log </dev/null >/dev/null 2>&1 &"
  mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm-testbed';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
  cat >/etc/slurm/slurmdbd.conf <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
LogFile=$SLURM_DIR/log/slurmdbd.log
PidFile=/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurm-testbed
StorageLoc=slurm_acct_db
EOF
  chmod 600 /etc/slurm/slurmdbd.conf
  start slurmdbd /run/slurmdbd.pid 'sacctmgr -n -P list cluster' slurmdbd
  # The cluster, accounts, QOS and users, once (a database kept from an earlier run has them)
  if ! sacctmgr -n -P list user "$HPC_USER" | grep -q .; then
    sacctmgr -i add cluster testbed >/dev/null
    sacctmgr -i add qos capped MaxSubmitJobsPerUser=2 >/dev/null
    sacctmgr -i add account lab,capped,assoccap cluster=testbed >/dev/null
    sacctmgr -i modify account capped set qos=capped defaultqos=capped >/dev/null
    sacctmgr -i modify account assoccap set MaxSubmitJobs=2 >/dev/null
    users=$(IFS=,; echo "${ACCT_USERS[*]}")
    sacctmgr -i add user "$users" account=lab,capped,assoccap defaultaccount=lab >/dev/null
  fi
fi
start slurmctld /run/slurmctld.pid 'scontrol ping | grep -q UP' slurmctld
start slurmd /run/slurmd.pid 'sinfo -h -N -o %T | grep -Eq "idle|mixed|allocated"' slurmd -N localhost
# slurmctld resets the jobcomp file to 0644 at each start (and so does root's own `sacct -c`), but
# non-root `sacct -c` opens it for writing (tests/test_slurm_live.py opens it again before its own).
chmod 0666 "$(scontrol show config | sed -n 's/^JobCompLoc *= *//p')"

# 5. sshd: key-only login for $HPC_USER; the key and known_hosts stay in $KEYS. The login host and
# the gateway (step 7) have host keys of their own, so that a client can tell the three apart.
ssh-keygen -A >/dev/null
install -d -m 755 /run/sshd
[ -f "$KEYS/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C labctl-testbed -f "$KEYS/id_ed25519"
install -d -m 700 -o "$HPC_USER" -g "$HPC_USER" "/home/$HPC_USER/.ssh"
install -m 600 -o "$HPC_USER" -g "$HPC_USER" "$KEYS/id_ed25519.pub" "/home/$HPC_USER/.ssh/authorized_keys"
for h in mfa gw; do
  [ -f "$KEYS/host_${h}_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C "testbed-$h" -f "$KEYS/host_${h}_ed25519"
done
{
  for t in ed25519 ecdsa rsa; do
    echo "[127.0.0.1]:$SSH_PORT $(cut -d' ' -f1,2 "/etc/ssh/ssh_host_${t}_key.pub")"
  done
  echo "[$MFA_ADDR]:$MFA_PORT $(cut -d' ' -f1,2 "$KEYS/host_mfa_ed25519.pub")"
  echo "[127.0.0.1]:$GW_PORT $(cut -d' ' -f1,2 "$KEYS/host_gw_ed25519.pub")"
} >"$KEYS/known_hosts.tmp"
mv "$KEYS/known_hosts.tmp" "$KEYS/known_hosts"
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

# 7. The MPCDF-like login host and its gateway: no keys, every new login asks the account password
# (pam_unix) and then a one-time password (pam_oath). OpenSSH 9.2 has no PAMServiceName: sshd takes
# its program name as the PAM service, so it runs as /usr/local/sbin/sshd-otp with its own
# /etc/pam.d/sshd-otp. The login host's users are ordinary local users: same SLURM, own homes.
# They also get the testbed key in authorized_keys, so that "key refused" is sshd's doing.
for u in "$MFA_USER:$MFA_PASSWORD" "$TOTP_USER:$TOTP_PASSWORD" "$GW_USER:$GW_PASSWORD"; do
  user=${u%%:*}
  echo "$u" | chpasswd
  install -d -m 700 -o "$user" -g "$user" "/home/$user/.ssh"
  install -m 600 -o "$user" -g "$user" "$KEYS/id_ed25519.pub" "/home/$user/.ssh/authorized_keys"
done
# pam_oath's users file: "HOTP USER - HEXSEED [COUNTER LAST-OTP TIME]" (counter-based) or
# "HOTP/T30/6 USER - HEXSEED ..." (time-based). pam_oath rewrites a line after each login, so an
# existing line is kept (its counter is where the next code starts).
install -d -m 700 "$OATH_DIR"
touch "$OATH_USERS"
for line in "HOTP $MFA_USER - $MFA_SEED" "HOTP/T30/6 $TOTP_USER - $TOTP_SEED" "HOTP $GW_USER - $GW_SEED"; do
  read -r _ user _ <<<"$line"
  grep -q "^[^ ]* $user " "$OATH_USERS" || echo "$line" >>"$OATH_USERS"
done
chown root:root "$OATH_USERS" && chmod 600 "$OATH_USERS"
cat >/etc/pam.d/sshd-otp <<EOF
# scripts/testbed.sh: password, then one-time password (for sshd started as sshd-otp)
auth     required pam_unix.so
auth     required pam_oath.so usersfile=$OATH_USERS window=20 digits=6
account  required pam_nologin.so
@include common-account
@include common-session
EOF
ln -sfn /usr/sbin/sshd /usr/local/sbin/sshd-otp
otp_sshd=(-o UsePAM=yes -o PubkeyAuthentication=no -o PasswordAuthentication=no
          -o KbdInteractiveAuthentication=yes -o AuthenticationMethods=keyboard-interactive)
# A login host left running by a run with the other MFA_GATEWAY_ONLY listens elsewhere: restart it.
if alive /run/sshd-mfa.pid && ! ps -o args= -p "$(cat /run/sshd-mfa.pid)" | grep -q "ListenAddress=$MFA_ADDR "; then
  kill "$(cat /run/sshd-mfa.pid)"
  wait_for "! alive /run/sshd-mfa.pid"
fi
start sshd-mfa /run/sshd-mfa.pid true /usr/local/sbin/sshd-otp -p "$MFA_PORT" -o ListenAddress="$MFA_ADDR" \
  -o HostKey="$KEYS/host_mfa_ed25519" "${otp_sshd[@]}" -o AllowUsers="$MFA_USER $TOTP_USER" \
  -o PidFile=/run/sshd-mfa.pid -E "$HPC_DIR/sshd-mfa.log"
start sshd-gw /run/sshd-gw.pid true /usr/local/sbin/sshd-otp -p "$GW_PORT" -o ListenAddress=127.0.0.1 \
  -o HostKey="$KEYS/host_gw_ed25519" "${otp_sshd[@]}" -o AllowUsers="$GW_USER" \
  -o AllowTcpForwarding=yes -o PidFile=/run/sshd-gw.pid -E "$HPC_DIR/sshd-gw.log"
# MFA_GATEWAY_ONLY=1: new connections to the login host are refused unless they come from a process
# of $GW_USER, i.e. the gateway's sshd forwarding a ProxyJump (its session process runs as the user).
rule=(OUTPUT -o lo -d 127.0.0.2 -p tcp --dport "$MFA_PORT" --syn -m owner ! --uid-owner "$GW_USER"
      -j REJECT --reject-with tcp-reset)
if [ "$MFA_GATEWAY_ONLY" = 1 ]; then
  iptables -C "${rule[@]}" 2>/dev/null || iptables -A "${rule[@]}"
  keyscan=(runuser -u "$GW_USER" -- ssh-keyscan)
else
  ! command -v iptables >/dev/null || while iptables -D "${rule[@]}" 2>/dev/null; do :; done
  keyscan=(ssh-keyscan)
fi
wait_for "${keyscan[*]} -t ed25519 -p $MFA_PORT $MFA_ADDR | grep -qF '$(cut -d' ' -f2 "$KEYS/host_mfa_ed25519.pub")'"
wait_for "ssh-keyscan -t ed25519 -p $GW_PORT 127.0.0.1 | grep -qF '$(cut -d' ' -f2 "$KEYS/host_gw_ed25519.pub")'"

# 8. env.sh last: its presence means the testbed is ready
cat >"$HPC_DIR/env.sh.tmp" <<EOF
export HPC_SSH_HOST=127.0.0.1 HPC_SSH_PORT=$SSH_PORT HPC_SSH_USER=$HPC_USER
export HPC_SSH_KEY=$KEYS/id_ed25519 HPC_KNOWN_HOSTS=$KEYS/known_hosts HPC_SSH_CONFIG=$HPC_DIR/ssh_config
export HPC_MFA_HOST=$MFA_ADDR HPC_MFA_PORT=$MFA_PORT HPC_MFA_GATEWAY_ONLY=$MFA_GATEWAY_ONLY
export HPC_MFA_USER=$MFA_USER HPC_MFA_PASSWORD=$MFA_PASSWORD HPC_MFA_SEED=$MFA_SEED
export HPC_TOTP_USER=$TOTP_USER HPC_TOTP_PASSWORD=$TOTP_PASSWORD HPC_TOTP_SEED=$TOTP_SEED
export HPC_GW_HOST=127.0.0.1 HPC_GW_PORT=$GW_PORT HPC_GW_USER=$GW_USER HPC_GW_PASSWORD=$GW_PASSWORD
export HPC_GW_SEED=$GW_SEED HPC_OATH_USERS=$OATH_USERS
export HPC_WITH_DBD=$WITH_DBD
export HPC_MFA_LOG=$HPC_DIR/sshd-mfa.log HPC_GW_LOG=$HPC_DIR/sshd-gw.log HPC_SSHD_LOG=$HPC_DIR/sshd.log
EOF
mv "$HPC_DIR/env.sh.tmp" "$HPC_DIR/env.sh"
say "ready: source $HPC_DIR/env.sh; ssh -F $HPC_DIR/ssh_config hpc sinfo"
