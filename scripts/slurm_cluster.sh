#!/usr/bin/env bash
# A real single-node SLURM cluster on this host, for `study.launcher=submitit` and tests/test_slurm.py.
#
# Debian's slurm-wlm + munge (installed when missing and we are root), one node as `slurmd -C`
# sees this host, one partition (`debug`), no accounting (no slurmdbd: sacct has nothing, which is
# what the launcher must cope with), process tracking without cgroups (containers and CI runners
# rarely delegate them). munged, slurmctld and slurmd are started here, without systemd. Idempotent:
# a second call finds the daemons answering and the node idle, and returns at once; a changed
# slurm.conf restarts the daemons. Ends when `sinfo` shows the node idle (or fails saying why).
#   scripts/slurm_cluster.sh          start (or check) the cluster
#   scripts/slurm_cluster.sh stop     stop the daemons it started
set -euo pipefail

CONF_DIR=/etc/slurm
PARTITION=${SLURM_PARTITION_NAME:-debug}
STATE=/var/spool/slurmctld SPOOL=/var/spool/slurmd LOGS=/var/log/slurm RUN=/run/slurm
say() { echo "slurm_cluster: $*" >&2; }
die() { say "$*"; exit 1; }
# The end of a daemon's log, then stop: a CI log then says why the cluster did not come up.
die_with_log() { tail -n 20 "$1" >&2 2>/dev/null || true; die "$2 (see $1)"; }

install_packages() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
        && command -v sbatch >/dev/null && return
    [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null \
        || die "slurmctld/slurmd/munged are not installed; as root: apt-get install slurm-wlm munge"
    say "installing slurm-wlm and munge"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        slurm-wlm munge) >/dev/null
}

start_munge() {
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then return; fi
    [ -s /etc/munge/munge.key ] || { dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
                                     chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key; }
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    runuser -u munge -- /usr/sbin/munged --force
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return; sleep 0.1; done
    die_with_log /var/log/munge/munged.log "munged does not answer"
}

# The node as slurmd sees it (CPUs, sockets, cores, threads, memory), reached on loopback so a
# host name that does not resolve does not matter.
write_conf() {
    local host node
    host=$(hostname -s)
    node=$(slurmd -C | head -1 | sed -e "s/^NodeName=[^ ]*/NodeName=$host NodeAddr=127.0.0.1/")
    mkdir -p "$CONF_DIR" "$STATE" "$SPOOL" "$LOGS" "$RUN"
    cat >"$CONF_DIR/slurm.conf.new" <<EOF
# Written by optsuite's scripts/slurm_cluster.sh: a single-node cluster on $host.
ClusterName=optsuite
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$STATE
SlurmdSpoolDir=$SPOOL
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
MpiDefault=none
MailProg=/bin/true
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
MinJobAge=300
$node State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    cat >"$CONF_DIR/cgroup.conf.new" <<EOF
CgroupPlugin=cgroup/v1
ConstrainCores=no
ConstrainDevices=no
ConstrainRAMSpace=no
ConstrainSwapSpace=no
EOF
    local changed=0
    for f in slurm.conf cgroup.conf; do
        if cmp -s "$CONF_DIR/$f.new" "$CONF_DIR/$f"; then rm "$CONF_DIR/$f.new"
        else mv "$CONF_DIR/$f.new" "$CONF_DIR/$f"; changed=1; fi
    done
    return $((1 - changed))  # 0: the configuration changed
}

running() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop_daemons() {
    local pidfile pid
    for pidfile in "$RUN/slurmd.pid" "$RUN/slurmctld.pid"; do
        running "$pidfile" || continue
        pid=$(cat "$pidfile")
        kill "$pid"
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    done
}

node_state() { sinfo -h -N -n "$(hostname -s)" -o %t 2>/dev/null | head -1; }

wait_idle() {
    local state=""
    for _ in $(seq 120); do
        state=$(node_state)
        case "$state" in
            idle|mix|alloc) say "node $(hostname -s) $state, partition $PARTITION"; return ;;
            down*|drain*|drng*|fail*) scontrol update NodeName="$(hostname -s)" State=RESUME 2>/dev/null || true ;;
        esac
        sleep 0.5
    done
    tail -n 20 "$LOGS/slurmctld.log" >&2 2>/dev/null || true
    die_with_log "$LOGS/slurmd.log" "the node is not idle after 60 s (state: ${state:-none})"
}

if [ "${1:-start}" = stop ]; then stop_daemons; exit 0; fi
install_packages
start_munge
if write_conf; then stop_daemons; fi
running "$RUN/slurmctld.pid" || /usr/sbin/slurmctld || die_with_log "$LOGS/slurmctld.log" "slurmctld did not start"
for _ in $(seq 100); do scontrol ping >/dev/null 2>&1 && break; sleep 0.1; done
running "$RUN/slurmd.pid" || /usr/sbin/slurmd || die_with_log "$LOGS/slurmd.log" "slurmd did not start"
wait_idle
