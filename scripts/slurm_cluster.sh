#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, for the tests of the "slurm" executor and
# for trying a study file before taking it to a cluster (REFERENCES section 7).
#
#   scripts/slurm_cluster.sh install DIR # only the packages (as root, when missing)
#   scripts/slurm_cluster.sh start DIR   # installs Debian's packages when root and missing,
#                                        # then starts munged, MariaDB, slurmdbd, slurmctld and
#                                        # slurmd with everything they write under DIR
#   . DIR/env                            # SLURM_CONF for sbatch / squeue / sacct / the runner
#   scripts/slurm_cluster.sh stop DIR    # cancels every job, waits for an empty queue, then
#                                        # stops the daemons by the PIDs it started, last first
#
# The node is "localhost" with this machine's cores, in one default partition "debug" without
# a time limit. Accounting (slurmdbd with a private MariaDB) is on, because submitit reads the
# job states with sacct, which SLURM 22.05 answers only with accounting. Nothing starts by
# itself and nothing is left running by `stop`: no systemd, no system-wide files changed
# except the packages (and munge's key, which Debian's package creates).
set -euo pipefail

PACKAGES="slurmctld slurmd slurm-client slurmdbd munge mariadb-server"

usage() { echo "usage: $0 install|start|stop|check DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
action=$1
dir=$(mkdir -p "$2" && cd "$2" && pwd)

have_tools() {
    for tool in munged slurmctld slurmd slurmdbd sbatch sacct mariadbd mariadb-install-db; do
        PATH="$PATH:/usr/sbin:/sbin" command -v "$tool" >/dev/null 2>&1 || return 1
    done
}

install_packages() {
    have_tools && return 0
    if [ "$(id -u)" != 0 ]; then
        echo "slurm_cluster: SLURM is not installed and this is not root: apt-get install" \
             "$PACKAGES" >&2
        return 3
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || return 1
    # policy-rc.d: the packages' scripts must not start daemons of their own
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    local status=0
    apt-get install -y -qq --no-install-recommends $PACKAGES >/dev/null || status=$?
    rm -f /usr/sbin/policy-rc.d
    return $status
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_until() {  # seconds, what, command...
    local limit=$1 what=$2; shift 2
    local end=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        if [ $SECONDS -ge $end ]; then
            echo "slurm_cluster: $what did not come up within ${limit}s; logs in $dir/log" >&2
            return 1
        fi
        sleep 0.5
    done
}

started() {  # name pid: recorded at once, so that `stop` finds it even if start fails later
    echo "$1 $2" >> "$dir/pids"
}

start() {
    install_packages || return $?
    export PATH="$PATH:/usr/sbin:/sbin"
    if [ -s "$dir/pids" ]; then
        echo "slurm_cluster: $dir/pids exists; stop that cluster first" >&2
        return 1
    fi
    mkdir -p "$dir/log" "$dir/mysql" "$dir/spool/ctld" "$dir/spool/d" "$dir/run"
    : > "$dir/pids"
    local cpus mem ctld_port d_port dbd_port db_port
    cpus=$(nproc)
    mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2 ))
    ctld_port=$(free_port); d_port=$(free_port); dbd_port=$(free_port); db_port=$(free_port)

    # munge: run as user munge (the key belongs to munge) on its default socket, the one
    # SLURM's commands use whatever AuthInfo says; its files in /run/munge too, because DIR
    # may be in a folder only root can enter (pytest's)
    if munge -n >/dev/null 2>&1; then
        echo "slurm_cluster: a munged already listens on /run/munge/munge.socket.2" >&2
        return 1
    fi
    rm -f /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock
    mkdir -p /run/munge && chown munge:munge /run/munge
    [ -f /etc/munge/munge.key ] || { mungekey --create 2>/dev/null || create-munge-key -f; }
    setpriv --reuid=munge --regid=munge --init-groups munged -F \
        --socket=/run/munge/munge.socket.2 --pid-file=/run/munge/munged.pid \
        --seed-file=/run/munge/seed --log-file=/run/munge/munged.log \
        > "$dir/log/munged.out" 2>&1 &
    started munged $!
    wait_until 20 munged test -S /run/munge/munge.socket.2 || return 1

    # MariaDB: a private data folder, socket and port on 127.0.0.1
    mariadb-install-db --no-defaults --datadir="$dir/mysql" --user=root \
        --auth-root-authentication-method=normal > "$dir/log/mariadb-install.log" 2>&1 \
        || return 1
    mariadbd --no-defaults --datadir="$dir/mysql" --socket="$dir/run/mysql.sock" \
        --pid-file="$dir/run/mysql.pid" --bind-address=127.0.0.1 --port="$db_port" --user=root \
        --log-error="$dir/log/mariadb.log" --skip-log-bin --innodb-buffer-pool-size=64M &
    started mariadbd $!
    wait_until 60 MariaDB mariadb --no-defaults --socket="$dir/run/mysql.sock" -uroot -e 'select 1' || return 1
    mariadb --no-defaults --socket="$dir/run/mysql.sock" -uroot -e "
        CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
        CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';" || return 1

    cat > "$dir/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdPort=$dbd_port
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$db_port
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
PidFile=$dir/run/slurmdbd.pid
LogFile=$dir/log/slurmdbd.log
EOF
    chmod 600 "$dir/slurmdbd.conf"
    cat > "$dir/slurm.conf" <<EOF
ClusterName=nnunettransfer
SlurmctldHost=localhost
SlurmctldPort=$ctld_port
SlurmdPort=$d_port
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$dbd_port
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=5
KillWait=5
MinJobAge=30
MaxArraySize=1001
SchedulerParameters=batch_sched_delay=0,sched_min_interval=100000
StateSaveLocation=$dir/spool/ctld
SlurmdSpoolDir=$dir/spool/d
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ReturnToService=2
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
    # slurmdbd reads slurmdbd.conf from the folder of SLURM_CONF
    export SLURM_CONF="$dir/slurm.conf"
    echo "export SLURM_CONF=$dir/slurm.conf" > "$dir/env"

    slurmdbd -D > "$dir/log/slurmdbd.out" 2>&1 &
    started slurmdbd $!
    wait_until 60 slurmdbd sacctmgr -i list cluster || return 1
    sacctmgr -i add cluster nnunettransfer > /dev/null 2>&1 || true
    slurmctld -D -f "$dir/slurm.conf" > "$dir/log/slurmctld.out" 2>&1 &
    started slurmctld $!
    wait_until 30 slurmctld scontrol ping || return 1
    slurmd -D -N localhost -f "$dir/slurm.conf" > "$dir/log/slurmd.out" 2>&1 &
    started slurmd $!
    wait_until 30 "the node" sh -c 'sinfo -h -N -o %t | grep -q -E "^(idle|mix|alloc)"' || return 1
    echo "slurm_cluster: up in $dir ($cpus CPUs, ${mem} MB); . $dir/env"
}

stop() {
    export PATH="$PATH:/usr/sbin:/sbin"
    [ -f "$dir/pids" ] || return 0
    if [ -f "$dir/slurm.conf" ]; then
        export SLURM_CONF="$dir/slurm.conf"
        if scontrol ping >/dev/null 2>&1; then
            scancel --full --signal=KILL $(squeue -h -o %A) >/dev/null 2>&1 || true
            local end=$((SECONDS + 30))
            while [ -n "$(squeue -h -o %A 2>/dev/null)" ] && [ $SECONDS -lt $end ]; do
                sleep 0.5
            done
        fi
    fi
    # last started first: slurmd before slurmctld before slurmdbd before MariaDB and munged
    tac "$dir/pids" | while read -r name pid; do
        kill -TERM "$pid" 2>/dev/null || continue
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    done
    mv "$dir/pids" "$dir/pids.stopped"
}

check() {  # exits 0 when every daemon this DIR started is alive
    while read -r name pid; do
        kill -0 "$pid" 2>/dev/null || { echo "$name ($pid) is not running" >&2; return 1; }
    done < "$dir/pids"
}

case $action in
    install) install_packages ;;
    start) start || { status=$?; stop; exit $status; } ;;
    stop) stop ;;
    check) check ;;
    *) usage ;;
esac
