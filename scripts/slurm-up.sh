#!/usr/bin/env bash
# Starts a real single-node Slurm cluster on this machine, for the Slurm executor's tests:
# munged, slurmctld and slurmd started directly (no systemd), one node with this machine's
# CPUs and memory, one partition `debug`. Installs Debian's slurm-wlm and munge if missing.
# Run as root; idempotent (a cluster that already answers `sinfo` is left alone).
#
#   sudo scripts/slurm-up.sh && cargo nextest run --run-ignored only -E 'binary(slurm)'
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
    echo "slurm-up.sh: run as root (it installs packages and starts daemons)" >&2
    exit 1
fi
if command -v sinfo >/dev/null && timeout 5 sinfo -h -o %T 2>/dev/null | grep -qE 'idle|mix|alloc'; then
    echo "slurm-up.sh: Slurm already answers"
    exit 0
fi
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
fi

# munge: a key, its folders, the daemon.
mkdir -p /etc/munge /var/lib/munge /var/log/munge /run/munge
if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge /run/munge 2>/dev/null || true
chmod 0700 /etc/munge /var/lib/munge /var/log/munge
chmod 0755 /run/munge
chmod 0400 /etc/munge/munge.key
if ! pgrep -x munged >/dev/null; then
    if id munge >/dev/null 2>&1; then
        runuser -u munge -- /usr/sbin/munged
    else
        /usr/sbin/munged --force
    fi
fi

# slurm.conf: this machine as the one node (its name must resolve).
node=$(hostname -s)
getent hosts "$node" >/dev/null || echo "127.0.0.1 $node" >> /etc/hosts
cpus=$(nproc)
mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
conf_dir=/etc/slurm
[ -d /etc/slurm-llnl ] && [ ! -d /etc/slurm ] && conf_dir=/etc/slurm-llnl
mkdir -p "$conf_dir" /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
cat > "$conf_dir/slurm.conf" <<CONF
ClusterName=cft-ci
SlurmctldHost=$node
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
# Memory is sampled every second and a job over its --mem is killed (OUT_OF_MEMORY), as
# cgroups would do on a real cluster.
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=1
JobAcctGatherParams=OverMemoryKill
AccountingStorageType=accounting_storage/none
MpiDefault=none
# Finished jobs stay visible to squeue for ten minutes (there is no accounting daemon).
MinJobAge=600
KillWait=5
InactiveLimit=0
SchedulerParameters=sched_interval=1
NodeName=$node CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
CONF
# No cgroup.conf: with proctrack/linuxproc and task/none no cgroup plugin is loaded (Slurm
# 22.05 rejects `CgroupPlugin=disabled`).
rm -f "$conf_dir/cgroup.conf"

pkill -x slurmctld 2>/dev/null || true
pkill -x slurmd 2>/dev/null || true
sleep 1
slurmctld -c
slurmd
for _ in $(seq 60); do
    if sinfo -h -o %T 2>/dev/null | grep -qE 'idle|mix|alloc'; then
        echo "slurm-up.sh: node $node up ($cpus CPUs, $mem MB)"
        exit 0
    fi
    sleep 1
done
echo "slurm-up.sh: the node did not come up; see /var/log/slurm/*.log" >&2
tail -20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
exit 1
