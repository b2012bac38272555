#!/usr/bin/env bash
# A real one-node Slurm cluster (munge, MariaDB, slurmdbd, slurmctld, slurmd) for tests
# and the demo. Runs as root, needs no systemd, keeps every file in one folder.
#
#   bash slurm/devcluster.sh up | status | down [--purge]
#
# WMSUB_CLUSTER_DIR   the cluster folder (default <repo>/.devcluster)
# WMSUB_CLUSTER_*     ports and timings, read on every `up` (see load_settings)
# WMSUB_CLUSTER_CLIENT_CONF  where to copy slurm.conf for clients (default
#                     /etc/slurm/slurm.conf; "" for none, e.g. a second, throwaway cluster)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TEMPLATES=$REPO/slurm
DIR=${WMSUB_CLUSTER_DIR:-$REPO/.devcluster}
# Where client commands look by default; "" skips the copy (clients then need SLURM_CONF).
CLIENT_CONF=${WMSUB_CLUSTER_CLIENT_CONF-/etc/slurm/slurm.conf}
MARKER="# written by wmsub slurm/devcluster.sh"
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)
# procps (ps, pgrep) is missing from slim container images.
PACKAGES=(slurmctld slurmd slurm-client slurmdbd munge mariadb-server procps)

log() { echo "devcluster: $*" >&2; }

die() {  # die MESSAGE [LOGFILE]: the message, then the tail of the daemon's log
    log "ERROR: $1"
    if [[ -n ${2:-} && -f $2 ]]; then
        echo "----- last lines of $2 -----" >&2
        tail -n 40 "$2" >&2
        echo "-----" >&2
    fi
    exit 1
}

absolute_dir() { mkdir -p "$1" && cd "$1" && pwd; }

pid_file() {
    case $1 in
        munged) echo "$DIR/munge/munged.pid" ;;
        mariadbd) echo "$DIR/mysql/mysqld.pid" ;;
        *) echo "$DIR/run/$1.pid" ;;
    esac
}

log_file() {
    case $1 in
        munged) echo "$DIR/munge/munged.log" ;;
        mariadbd) echo "$DIR/mysql/mariadb.log" ;;
        *) echo "$DIR/log/$1.log" ;;
    esac
}

# A zombie still passes `kill -0`, and a container's init may be slow to reap it.
alive() {
    local stat
    kill -0 "$1" 2>/dev/null || return 1
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat:0:1} != Z ]]
}

# Prints the daemon's pid if its pid file names a live process of that program.
# The /proc comm check keeps a recycled pid from passing for our daemon.
running_pid() {
    local file pid comm
    file=$(pid_file "$1")
    [[ -s $file ]] || return 1
    pid=$(tr -dc '0-9' <"$file")
    [[ -n $pid ]] && alive "$pid" || return 1
    comm=$(cat "/proc/$pid/comm" 2>/dev/null || true)
    [[ $comm == "$1"* ]] || return 1
    echo "$pid"
}

# Slurm's database clients can exit 0 after printing "Connection refused".
quietly_succeeds() {
    local err
    err=$("$@" 2>&1 >/dev/null) && [[ -z $err ]]
}

wait_until() {  # wait_until SECONDS WHAT LOGFILE COMMAND...
    local limit=$1 what=$2 logf=$3 deadline
    shift 3
    deadline=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die "$what not ready after ${limit}s" "$logf"
        sleep 0.5
    done
}

install_packages() {
    local missing=0 cmd
    for cmd in slurmctld slurmd sbatch sacct slurmdbd munged mariadbd mariadb-install-db pgrep; do
        command -v "$cmd" >/dev/null || missing=1
    done
    ((missing)) || return 0
    log "installing ${PACKAGES[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Package scripts must not start the distribution's own daemons.
    local policy=/usr/sbin/policy-rc.d added_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && added_policy=1
    fi
    local install=(apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}") rc=0
    if ! "${install[@]}" >/dev/null 2>&1; then
        { apt-get update -qq && "${install[@]}" >/dev/null; } || rc=$?
    fi
    ((added_policy)) && rm -f "$policy"
    ((rc == 0)) || die "apt-get could not install ${PACKAGES[*]} (exit $rc)"
}

# Ports and timings come from the environment (or these defaults) on every `up`; only the
# database password is generated once per folder and kept.
load_ports() {
    SLURMCTLD_PORT=${WMSUB_CLUSTER_SLURMCTLD_PORT:-6817}
    SLURMD_PORT=${WMSUB_CLUSTER_SLURMD_PORT:-6818}
    SLURMDBD_PORT=${WMSUB_CLUSTER_SLURMDBD_PORT:-6819}
    DB_PORT=${WMSUB_CLUSTER_DB_PORT:-3306}
}

load_settings() {
    load_ports
    # Requeued jobs wait cred_expire + 1 s (slurm/README.md); Slurm's minimum is 5.
    CRED_EXPIRE=${WMSUB_CLUSTER_CRED_EXPIRE:-10}
    # 0 sends the job's signal together with SIGTERM, which kills submitit's
    # `scontrol requeue`; jobs that requeue themselves leave at once anyway.
    GRACE_TIME=${WMSUB_CLUSTER_GRACE_TIME:-5}
    KILL_WAIT=${WMSUB_CLUSTER_KILL_WAIT:-5}
    local secret=$DIR/etc/db_password
    if [[ ! -s $secret ]]; then
        (umask 077 && head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$secret")
    fi
    DB_PASS=$(cat "$secret")
}

render() {  # render TEMPLATE OUTPUT MODE: replace only when the text changed
    local tmp=$2.new
    sed -e "s|@DIR@|$DIR|g" \
        -e "s|@SLURMCTLD_PORT@|$SLURMCTLD_PORT|g" -e "s|@SLURMD_PORT@|$SLURMD_PORT|g" \
        -e "s|@SLURMDBD_PORT@|$SLURMDBD_PORT|g" -e "s|@DB_PORT@|$DB_PORT|g" \
        -e "s|@DB_PASS@|$DB_PASS|g" -e "s|@CRED_EXPIRE@|$CRED_EXPIRE|g" \
        -e "s|@GRACE_TIME@|$GRACE_TIME|g" -e "s|@KILL_WAIT@|$KILL_WAIT|g" \
        "$TEMPLATES/$1" >"$tmp"
    chmod "$3" "$tmp"
    if cmp -s "$tmp" "$2"; then
        rm -f "$tmp"
    else
        mv -f "$tmp" "$2"
        CONFIG_CHANGED=1
    fi
}

prepare_folder() {
    mkdir -p "$DIR"/{etc,state,spool/slurmd,run,log,dev,munge,mysql}
    chmod 755 "$DIR"
    load_settings
    CONFIG_CHANGED=0
    render slurm.conf.tmpl "$DIR/etc/slurm.conf" 644
    render gres.conf.tmpl "$DIR/etc/gres.conf" 644
    SLURM_CONFIG_CHANGED=$CONFIG_CHANGED
    CONFIG_CHANGED=0
    render slurmdbd.conf.tmpl "$DIR/etc/slurmdbd.conf" 600
    render my.cnf.tmpl "$DIR/etc/my.cnf" 644
    DB_CONFIG_CHANGED=$CONFIG_CHANGED
    local i
    for i in 0 1 2 3; do
        [[ -c $DIR/dev/nvidia$i ]] || mknod "$DIR/dev/nvidia$i" c 1 3
    done
    chown munge:munge "$DIR/munge" && chmod 755 "$DIR/munge"
    chown mysql:mysql "$DIR/mysql" && chmod 755 "$DIR/mysql"
    local user
    for user in munge mysql; do
        runuser -u "$user" -- test -x "$DIR/$user" ||
            die "user $user cannot reach $DIR: a parent folder is not searchable by others (e.g. /root is 700). Run 'chmod o+x' on the parents or set WMSUB_CLUSTER_DIR to a folder such as /var/tmp/wmsub-devcluster"
    done
    install_client_conf
}

# Client commands (here, in pytest, in submitit jobs, in users' shells) read
# /etc/slurm/slurm.conf unless SLURM_CONF is set, so that path gets a copy of ours.
install_client_conf() {
    [[ -n $CLIENT_CONF ]] || return 0
    mkdir -p "$(dirname "$CLIENT_CONF")"
    if [[ -f $CLIENT_CONF ]] && ! grep -qF "$MARKER" "$CLIENT_CONF"; then
        [[ -e $CLIENT_CONF.before-wmsub ]] || cp -p "$CLIENT_CONF" "$CLIENT_CONF.before-wmsub"
        log "saved the previous $CLIENT_CONF as $CLIENT_CONF.before-wmsub"
    fi
    { echo "$MARKER from $DIR/etc/slurm.conf"; cat "$DIR/etc/slurm.conf"; } >"$CLIENT_CONF.new"
    if cmp -s "$CLIENT_CONF.new" "$CLIENT_CONF"; then rm -f "$CLIENT_CONF.new"; else mv -f "$CLIENT_CONF.new" "$CLIENT_CONF"; fi
}

start_munged() {
    running_pid munged >/dev/null && return 0
    local key=$DIR/munge/munge.key sock=$DIR/munge/munge.socket.2
    if [[ ! -s $key ]]; then
        if command -v mungekey >/dev/null; then
            mungekey --create --keyfile="$key" --force
        else
            dd if=/dev/urandom of="$key" bs=1024 count=1 status=none
        fi
        chown munge:munge "$key" && chmod 400 "$key"
    fi
    rm -f "$sock" "$sock.lock"
    runuser -u munge -- munged --socket="$sock" --key-file="$key" \
        --pid-file="$(pid_file munged)" --log-file="$(log_file munged)" \
        --seed-file="$DIR/munge/munged.seed" 9>&- ||
        die "munged failed to start" "$(log_file munged)"
    wait_until 20 munged "$(log_file munged)" bash -c "munge -n -S '$sock' | unmunge -S '$sock'"
}

# ---- preflight: everything `up` must know before it changes a file or starts a process ----

# The pids listening on TCP port $1, from /proc (no ss or lsof needed), one per line.
port_listeners() {
    local hex inode
    hex=$(printf ':%04X' "$1")
    for inode in $(awk -v p="$hex" 'FNR > 1 && $4 == "0A" && substr($2, length($2) - 4) == p { print $10 }' \
        /proc/net/tcp /proc/net/tcp6 2>/dev/null | sort -u); do
        # processes come and go while find walks /proc: its exit status means nothing here
        { find /proc/[0-9]*/fd -maxdepth 1 -lname "socket:\[$inode\]" 2>/dev/null || true; } | cut -d/ -f3
    done | sort -u
}

port_answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# "pid 123 (mariadbd --defaults-file=/x/etc/my.cnf)": who holds a port, as /proc tells it.
describe_pid() {
    local cmd
    cmd=$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | cut -c1-160)
    echo "pid $1 (${cmd% })"
}

# One problem line per taken port that our own running daemon does not hold.
check_port() {  # check_port PORT DAEMON SETTING
    local holders pid ours
    holders=$(port_listeners "$1" || true)
    if [[ -z $holders ]] && ! port_answers "$1"; then
        return 0
    fi
    ours=$(running_pid "$2" 2>/dev/null || true)
    if [[ -n $ours ]] && { [[ -z $holders ]] || grep -qx "$ours" <<<"$holders"; }; then
        return 0  # this folder's daemon, already up
    fi
    local who="another process"
    [[ -n $holders ]] && who=$(for pid in $holders; do describe_pid "$pid"; done | paste -sd ' ' -)
    PROBLEMS+=("port $1 ($2) is already taken by $who, perhaps the dev cluster of another checkout: stop that one with its 'bash slurm/devcluster.sh down', or pick a free port with $3=<port>")
}

# The client slurm.conf names the cluster every Slurm command talks to: never take it from
# another folder's cluster while that one runs.
check_client_conf() {
    [[ -n $CLIENT_CONF && -f $CLIENT_CONF ]] || return 0
    local owner
    owner=$(sed -n "1s|^$MARKER from \(.*\)/etc/slurm.conf\$|\1|p" "$CLIENT_CONF")
    [[ -n $owner && $owner != "$DIR" ]] || return 0
    if (DIR=$owner; running_pid slurmctld >/dev/null); then
        PROBLEMS+=("$CLIENT_CONF belongs to the running dev cluster in $owner; 'up' here would point every Slurm client at this one: stop that one with its 'bash slurm/devcluster.sh down', or set WMSUB_CLUSTER_CLIENT_CONF='' and use SLURM_CONF=$DIR/etc/slurm.conf")
    fi
}

# Every check at once, before anything changes: a clash leaves both clusters as they were.
preflight() {
    PROBLEMS=()
    load_ports
    check_port "$DB_PORT" mariadbd WMSUB_CLUSTER_DB_PORT
    check_port "$SLURMDBD_PORT" slurmdbd WMSUB_CLUSTER_SLURMDBD_PORT
    check_port "$SLURMCTLD_PORT" slurmctld WMSUB_CLUSTER_SLURMCTLD_PORT
    check_port "$SLURMD_PORT" slurmd WMSUB_CLUSTER_SLURMD_PORT
    check_client_conf
    ((${#PROBLEMS[@]} == 0)) && return 0
    log "ERROR: $DIR: nothing was changed or started:"
    local problem
    for problem in "${PROBLEMS[@]}"; do
        echo "  - $problem" >&2
    done
    exit 1
}

# A port that answers before our daemon runs belongs to someone else, most often the dev
# cluster of another checkout: say so instead of waiting for a daemon that cannot bind.
require_free_port() {  # require_free_port PORT DAEMON SETTING
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
        die "port $1 ($2) is already taken by another process, perhaps the dev cluster of another
    checkout: stop that one with its 'bash slurm/devcluster.sh down', or pick a free port with
    $3=<port>"
    fi
}

mariadb_client() { mariadb --defaults-file="$DIR/etc/my.cnf" "$@"; }

start_mariadb() {
    running_pid mariadbd >/dev/null && return 0
    require_free_port "$DB_PORT" mariadbd WMSUB_CLUSTER_DB_PORT
    local data=$DIR/mysql/data
    if [[ ! -d $data/mysql ]]; then
        rm -rf "$data"
        mariadb-install-db --defaults-file="$DIR/etc/my.cnf" --user=mysql \
            --auth-root-authentication-method=socket --skip-test-db \
            >"$DIR/mysql/install.log" 2>&1 || die "mariadb-install-db failed" "$DIR/mysql/install.log"
    fi
    # mariadbd does not daemonize itself: detach it from this shell and its terminal.
    setsid mariadbd --defaults-file="$DIR/etc/my.cnf" </dev/null >>"$DIR/mysql/mariadbd.out" 2>&1 9>&- &
    wait_until 60 mariadbd "$(log_file mariadbd)" mariadb-admin --defaults-file="$DIR/etc/my.cnf" ping
    wait_until 10 "mariadbd pid file" "$(log_file mariadbd)" running_pid mariadbd
}

# Every `up`: the password in slurmdbd.conf is the one the database holds.
ensure_db_user() {
    local user
    for user in "'slurm'@'127.0.0.1'" "'slurm'@'localhost'"; do
        mariadb_client -e "CREATE USER IF NOT EXISTS $user IDENTIFIED BY '$DB_PASS';
            ALTER USER $user IDENTIFIED BY '$DB_PASS';
            GRANT ALL ON slurm_acct_db.* TO $user;" ||
            die "could not create the slurm database user" "$(log_file mariadbd)"
    done
}

start_slurmdbd() {
    running_pid slurmdbd >/dev/null && return 0
    require_free_port "$SLURMDBD_PORT" slurmdbd WMSUB_CLUSTER_SLURMDBD_PORT
    # slurmdbd finds slurmdbd.conf next to $SLURM_CONF.
    slurmdbd 9>&- || die "slurmdbd failed to start" "$(log_file slurmdbd)"
    wait_until 60 slurmdbd "$(log_file slurmdbd)" quietly_succeeds sacctmgr -n show cluster
}

register_accounts() {
    [[ -n $(sacctmgr -n -P show cluster wmsubdev format=cluster) ]] ||
        sacctmgr -i add cluster wmsubdev >/dev/null
    [[ -n $(sacctmgr -n -P show account wmsub format=account) ]] ||
        sacctmgr -i add account wmsub Description=wmsub Organization=wmsub >/dev/null
    [[ -n $(sacctmgr -n -P show user root format=user) ]] ||
        sacctmgr -i add user root DefaultAccount=wmsub >/dev/null
}

node_state() { sinfo -h -n localhost -o %T 2>/dev/null | head -n 1; }

start_slurmctld() {
    running_pid slurmctld >/dev/null && return 0
    require_free_port "$SLURMCTLD_PORT" slurmctld WMSUB_CLUSTER_SLURMCTLD_PORT
    slurmctld -f "$SLURM_CONF" 9>&- || die "slurmctld failed to start" "$(log_file slurmctld)"
    wait_until 60 slurmctld "$(log_file slurmctld)" bash -c "scontrol ping | grep -q UP"
}

start_slurmd() {
    running_pid slurmd >/dev/null && return 0
    require_free_port "$SLURMD_PORT" slurmd WMSUB_CLUSTER_SLURMD_PORT
    slurmd -f "$SLURM_CONF" -N localhost 9>&- || die "slurmd failed to start" "$(log_file slurmd)"
    wait_until 60 "slurmd pid file" "$(log_file slurmd)" running_pid slurmd
}

wait_for_node() {
    local deadline=$((SECONDS + 60)) state
    while true; do
        state=$(node_state)
        case $state in
            idle | mixed | allocated) break ;;
            drain* | down* | fail*)
                # A node left down by an earlier crash: ReturnToService=2 only helps once
                # slurmd registers, so try one explicit resume before giving up.
                scontrol update NodeName=localhost State=RESUME >/dev/null 2>&1 || true ;;
        esac
        ((SECONDS < deadline)) || die "node localhost is '$state', not idle: $(sinfo -h -R)" "$(log_file slurmd)"
        sleep 0.5
    done
    wait_until 30 sacct "$(log_file slurmdbd)" quietly_succeeds sacct -n -X -S now-1minutes
}

cmd_up() {
    [[ $(id -u) -eq 0 ]] || die "devcluster.sh must run as root (it starts munged, MariaDB and Slurm daemons)"
    DIR=$(realpath -m "$DIR")
    preflight  # before the folder, the lock, packages, configs or daemons
    DIR=$(absolute_dir "$DIR")
    lock_cluster
    preflight  # again under the lock: another `up` may have started meanwhile
    install_packages
    prepare_folder
    export SLURM_CONF=$DIR/etc/slurm.conf
    if ((SLURM_CONFIG_CHANGED)) && running_pid slurmctld >/dev/null; then
        log "slurm.conf changed: scontrol reconfigure (new ports need 'down' then 'up')"
        scontrol reconfigure || die "scontrol reconfigure failed" "$(log_file slurmctld)"
    fi
    if ((DB_CONFIG_CHANGED)); then
        local name pid
        for name in slurmdbd mariadbd; do
            if pid=$(running_pid "$name"); then
                log "slurmdbd.conf or my.cnf changed: restarting $name"
                stop_pid "$name" "$pid"
            fi
        done
    fi
    local started=$SECONDS
    start_munged
    start_mariadb
    ensure_db_user
    start_slurmdbd
    register_accounts
    start_slurmctld
    start_slurmd
    wait_for_node
    log "up in $((SECONDS - started))s: $DIR"
    cmd_status
}

cmd_status() {
    [[ -d $DIR ]] || { log "no cluster folder at $DIR"; return 3; }
    DIR=$(cd "$DIR" && pwd)
    export SLURM_CONF=$DIR/etc/slurm.conf
    local name pid all_up=0
    for name in "${DAEMONS[@]}"; do
        if pid=$(running_pid "$name"); then
            printf '%-10s up   pid %s\n' "$name" "$pid"
        else
            printf '%-10s down\n' "$name"
            all_up=3
        fi
    done
    if running_pid slurmctld >/dev/null; then
        sinfo -o '%10P %.5a %.6D %.10T %.8c %G %N' || true
    fi
    return $all_up
}

# slurmstepd processes of this cluster run in our log folder with slurmd.log open.
our_stepd_pids() {
    local pid link
    for pid in $(pgrep -x slurmstepd || true); do
        for link in "/proc/$pid/cwd" "/proc/$pid"/fd/*; do
            if [[ $(readlink "$link" 2>/dev/null) == "$DIR/"* ]]; then
                echo "$pid"
                break
            fi
        done
    done
}

descendants() {  # all processes below a pid, from one ps snapshot
    ps -eo pid=,ppid= | awk -v root="$1" '
        { parent[$1] = $2 }
        END { for (p in parent) { q = parent[p]
                  while (q > 1) { if (q == root) { print p; break } q = parent[q] } } }'
}

# Concurrent `up`s (parallel test sessions) must not render or start things twice.
# Daemons start with fd 9 closed (`9>&-`), or they would hold the lock for ever.
lock_cluster() {
    mkdir -p "$DIR/run"
    exec 9>"$DIR/run/devcluster.lock"
    flock -w 600 9 || die "another devcluster.sh kept $DIR/run/devcluster.lock for 10 minutes"
}

stop_pid() {  # stop_pid NAME PID: TERM, wait, then KILL
    local i
    kill -TERM "$2" 2>/dev/null || return 0
    for ((i = 0; i < 100; i++)); do
        alive "$2" || return 0
        sleep 0.1
    done
    log "$1 (pid $2) ignored SIGTERM for 10s; sending SIGKILL"
    kill -KILL "$2" 2>/dev/null || true
}

cmd_down() {
    local purge=0
    [[ ${1:-} == --purge ]] && purge=1
    if [[ ! -d $DIR ]]; then
        log "no cluster folder at $DIR; nothing to stop"
        return 0
    fi
    DIR=$(cd "$DIR" && pwd)
    lock_cluster
    export SLURM_CONF=$DIR/etc/slurm.conf
    local name pid
    if running_pid slurmctld >/dev/null; then
        # Cancel jobs first so their steps end through slurmd instead of being orphaned.
        local jobs
        jobs=$(squeue -h -o %i 2>/dev/null || true)
        if [[ -n $jobs ]]; then
            # shellcheck disable=SC2086
            scancel $jobs >/dev/null 2>&1 || true
            local deadline=$((SECONDS + ${WMSUB_CLUSTER_KILL_WAIT:-5} + 10))
            while [[ -n $(squeue -h -t R,CG,S -o %i 2>/dev/null) ]] && ((SECONDS < deadline)); do
                sleep 0.5
            done
        fi
    fi
    for name in slurmd slurmctld slurmdbd mariadbd munged; do
        if pid=$(running_pid "$name"); then
            stop_pid "$name" "$pid"
        fi
    done
    for pid in $(our_stepd_pids); do
        # A stepd that outlived its slurmd: end it and every process of its job.
        # shellcheck disable=SC2046
        kill -KILL "$pid" $(descendants "$pid") 2>/dev/null || true
    done
    rm -f "$DIR"/run/*.pid "$DIR/munge/munged.pid"
    if ((purge)); then
        rm -rf "$DIR"
        if [[ -n $CLIENT_CONF && -f $CLIENT_CONF ]] && grep -qF "$MARKER from $DIR/" "$CLIENT_CONF"; then
            rm -f "$CLIENT_CONF"
            [[ -e $CLIENT_CONF.before-wmsub ]] && mv -f "$CLIENT_CONF.before-wmsub" "$CLIENT_CONF"
        fi
        log "removed $DIR"
    fi
    log "down"
}

case ${1:-} in
    up) cmd_up ;;
    status) cmd_status ;;
    down) cmd_down "${2:-}" ;;
    *) echo "usage: $0 up | status | down [--purge]" >&2; exit 2 ;;
esac
