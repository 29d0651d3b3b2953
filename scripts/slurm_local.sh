#!/usr/bin/env bash
# A single-node Slurm on this machine, for the cluster tests (tests/test_slurm.py) and for trying
# `ssamba-bench sweep ... --executor slurm` without a cluster.
#
#   sudo scripts/slurm_local.sh start     install (apt-get, only what is missing) and start munged,
#                                         slurmctld and slurmd; a no-op when already running
#   sudo scripts/slurm_local.sh stop      cancel this cluster's jobs, stop the daemons it started
#   scripts/slurm_local.sh status         one line: running or not (exit 0 when the node answers)
#
# Config, state and logs live under SSAMBA_SLURM_DIR (default /tmp/ssamba-slurm); /etc/slurm/slurm.conf
# is linked to its config when no other config is there, so sinfo/sbatch/squeue find it without
# SLURM_CONF. No accounting (no slurmdbd): `sacct` does not work, which the sweep does not need.
# Daemons are started by hand (no systemd): proctrack/linuxproc, task/none, select/cons_tres.
# Every wait is bounded: SSAMBA_SLURM_INSTALL_TIMEOUT_S (default 600) for apt-get, 60 s for the node.
set -euo pipefail

DIR=${SSAMBA_SLURM_DIR:-/tmp/ssamba-slurm}
CONF=$DIR/etc/slurm.conf
SYSTEM_CONF=/etc/slurm/slurm.conf
LOG=$DIR/log
PACKAGES="munge slurmctld slurmd slurm-client"
INSTALL_TIMEOUT_S=${SSAMBA_SLURM_INSTALL_TIMEOUT_S:-600}
NODE_TIMEOUT_S=60

say() { echo "slurm_local: $*"; }
fail() { echo "slurm_local: error: $*" >&2; exit 1; }

need_root() {
    [ "$(id -u)" = 0 ] || fail "$1 needs root (it installs packages and starts daemons): run sudo $0 $1"
}

# --- installing ------------------------------------------------------------------------------------

missing_packages() {
    local p missing=""
    for p in $PACKAGES; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
    done
    echo "$missing"
}

install_packages() {
    local missing
    missing=$(missing_packages)
    [ -z "$missing" ] && return 0
    command -v apt-get >/dev/null || fail "missing packages:$missing and no apt-get to install them"
    mkdir -p "$LOG"
    # No init system here: keep the packages' maintainer scripts from starting the daemons themselves
    # (they would fail without a config, or start a second slurmctld); removed after the install.
    local policy=/usr/sbin/policy-rc.d ours=""
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && ours=1
    fi
    local rc=0
    {
        DEBIAN_FRONTEND=noninteractive timeout "$INSTALL_TIMEOUT_S" apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive timeout "$INSTALL_TIMEOUT_S" \
            apt-get install -y -qq --no-install-recommends $missing
    } >"$LOG/install.log" 2>&1 || rc=$?
    [ -n "$ours" ] && rm -f "$policy"
    [ "$rc" = 0 ] || fail "apt-get install$missing failed (exit $rc; see $LOG/install.log)"
}

# --- the config ------------------------------------------------------------------------------------

write_config() {
    local host node
    host=$(hostname -s)
    # slurmd -C prints this machine's node line (CPUs, sockets, cores, threads, memory)
    node=$(slurmd -C 2>/dev/null | grep '^NodeName=') || fail "slurmd -C did not describe this machine"
    mkdir -p "$DIR/etc" "$DIR/state/ctld" "$DIR/state/d" "$DIR/run" "$LOG"
    cat >"$CONF" <<EOF
# Written by scripts/slurm_local.sh: a single-node cluster for tests (no accounting).
ClusterName=ssamba-local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state/ctld
SlurmdSpoolDir=$DIR/state/d
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
InactiveLimit=0
KillWait=30
$node State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    # the clients (sinfo, sbatch, squeue) read /etc/slurm/slurm.conf unless SLURM_CONF says otherwise
    if [ ! -e "$SYSTEM_CONF" ] || [ "$(readlink "$SYSTEM_CONF")" = "$CONF" ]; then
        mkdir -p "$(dirname "$SYSTEM_CONF")"
        ln -sfn "$CONF" "$SYSTEM_CONF"
    fi
}

# --- the daemons -----------------------------------------------------------------------------------

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munge() {
    munge_ok && return 0
    if [ ! -s /etc/munge/munge.key ]; then
        mkdir -p /etc/munge
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
        chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
    fi
    mkdir -p /run/munge /var/lib/munge /var/log/munge
    chown munge:munge /run/munge /var/lib/munge /var/log/munge
    runuser -u munge -- /usr/sbin/munged >>"$LOG/munged.start.log" 2>&1 \
        || fail "munged did not start (see $LOG/munged.start.log and /var/log/munge/munged.log)"
    touch "$DIR/run/munged.ours"  # stop ends munged only when this script started it
    local i
    for i in $(seq 50); do munge_ok && return 0; sleep 0.2; done
    fail "munged started but munge -n | unmunge fails (see /var/log/munge/munged.log)"
}

node_idle() {
    # the node answers and takes jobs: idle, or mixed/allocated when jobs already run
    SLURM_CONF=$CONF timeout 10 sinfo --noheader --responding --format=%T 2>/dev/null \
        | grep -Eq '^(idle|mixed|allocated|completing)'
}

start_daemons() {
    alive "$DIR/run/slurmctld.pid" || SLURM_CONF=$CONF slurmctld -f "$CONF" \
        || fail "slurmctld did not start (see $LOG/slurmctld.log)"
    alive "$DIR/run/slurmd.pid" || SLURM_CONF=$CONF slurmd -f "$CONF" \
        || fail "slurmd did not start (see $LOG/slurmd.log)"
    local waited=0
    until node_idle; do
        [ "$waited" -ge $((NODE_TIMEOUT_S * 2)) ] && \
            fail "the node did not come up within ${NODE_TIMEOUT_S} s (see $LOG/slurmctld.log, $LOG/slurmd.log)"
        # a node left DOWN by an earlier unclean stop: tell the controller it may take jobs again
        [ "$waited" = 20 ] && SLURM_CONF=$CONF timeout 10 scontrol update nodename="$(hostname -s)" state=resume \
            >/dev/null 2>&1 || true
        sleep 0.5
        waited=$((waited + 1))
    done
}

start() {
    need_root start
    if alive "$DIR/run/slurmctld.pid" && alive "$DIR/run/slurmd.pid" && node_idle; then
        say "already running (config $CONF)"
        return 0
    fi
    mkdir -p "$LOG" "$DIR/run" 2>/dev/null || fail "cannot create $DIR (set SSAMBA_SLURM_DIR to a writable directory)"
    install_packages
    write_config
    start_munge
    start_daemons
    say "single-node Slurm up: node $(hostname -s) idle, config $CONF, logs $LOG"
}

stop_pid() {  # $1: pid file, $2: name
    local pid i
    alive "$1" || { rm -f "$1"; return 0; }
    pid=$(cat "$1")
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
        echo "slurm_local: warning: $2 (pid $pid) did not stop in 10 s; killing it" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$1"
}

stop() {
    need_root stop
    if alive "$DIR/run/slurmctld.pid"; then
        # every job of this cluster is this machine's: cancel them, so no job step outlives slurmd
        local jobs i
        jobs=$(SLURM_CONF=$CONF timeout 10 squeue --noheader --format=%A 2>/dev/null | sort -u) || true
        if [ -n "$jobs" ]; then
            SLURM_CONF=$CONF timeout 10 scancel $jobs 2>/dev/null || true
            for i in $(seq 40); do
                [ -z "$(SLURM_CONF=$CONF timeout 10 squeue --noheader --format=%A 2>/dev/null)" ] && break
                sleep 0.5
            done
        fi
    fi
    stop_pid "$DIR/run/slurmd.pid" slurmd
    stop_pid "$DIR/run/slurmctld.pid" slurmctld
    if [ -f "$DIR/run/munged.ours" ]; then
        stop_pid /run/munge/munged.pid munged
        rm -f "$DIR/run/munged.ours"
    fi
    [ "$(readlink "$SYSTEM_CONF" 2>/dev/null)" = "$CONF" ] && rm -f "$SYSTEM_CONF"
    say "stopped (logs kept in $LOG)"
}

status() {
    if [ -f "$CONF" ] && command -v sinfo >/dev/null && node_idle; then
        say "running: $(SLURM_CONF=$CONF sinfo --noheader --format='%n %T %c CPUs') (config $CONF)"
    else
        say "not running (start it with: sudo $0 start)"
        return 1
    fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start | stop | status" >&2; exit 2 ;;
esac
