#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, for trying the cluster workflow and for the tests.
#
#   scripts/slurm/cluster.sh install   # Debian packages (root): slurmctld slurmd slurm-client munge slurmdbd mariadb-server
#   scripts/slurm/cluster.sh start     # munged, MariaDB, slurmdbd, slurmctld, slurmd; waits for an idle node (~15 s)
#   export SLURM_CONF=/tmp/cxr-ldm-slurm/etc/slurm.conf   # what `start` prints; sbatch/squeue/sacct need it
#   scripts/slurm/cluster.sh status
#   scripts/slurm/cluster.sh stop      # cancels the jobs, then stops each daemon by its PID
#
# Everything (configs, logs, spool, database) lives in CXR_SLURM_STATE (default /tmp/cxr-ldm-slurm); ports are
# CXR_SLURM_PORT .. +3 (default 6817: slurmctld, slurmd, slurmdbd, MariaDB on 127.0.0.1). Daemons run in the
# foreground (-D) in the background of this script, their PIDs under $STATE/pids; `start` wipes the state only
# when none of them is alive. Nothing is written outside the state folder, so a system SLURM is left alone.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STATE=${CXR_SLURM_STATE:-/tmp/cxr-ldm-slurm}
PORT=${CXR_SLURM_PORT:-6817}
CTLD_PORT=$PORT
SLURMD_PORT=$((PORT + 1))
DBD_PORT=$((PORT + 2))
MYSQL_PORT=$((PORT + 3))
HOST=$(hostname -s)
CONF=$STATE/etc/slurm.conf
PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)
COMMANDS=(slurmctld slurmd slurmdbd munged sbatch sacct sacctmgr sinfo squeue scancel mariadbd mariadb-install-db)
STOP_ORDER=(slurmd slurmctld slurmdbd mariadbd munged)

say() { echo "cluster.sh: $*" >&2; }
die() { say "$*"; exit 1; }

pid_of() { # PID of our daemon $1 if it is alive (PID file under $STATE/pids and the same program name)
  local file=$STATE/pids/$1 pid
  [[ -f $file ]] || return 1
  pid=$(cat "$file")
  [[ -r /proc/$pid/comm && $(cat "/proc/$pid/comm") == "$1"* ]] || return 1
  echo "$pid"
}

missing_commands() {
  local c out=()
  for c in "${COMMANDS[@]}"; do command -v "$c" >/dev/null 2>&1 || out+=("$c"); done
  echo "${out[*]:-}"
}

cmd_install() {
  [[ -z $(missing_commands) ]] && { say "SLURM packages already installed"; return 0; }
  [[ $(id -u) == 0 ]] || die "installing needs root (apt-get install ${PACKAGES[*]})"
  export DEBIAN_FRONTEND=noninteractive
  # the packages' own start scripts are refused in containers (policy-rc.d); cluster.sh starts the daemons
  apt-get -o DPkg::Lock::Timeout=300 update -qq
  apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
  local left
  left=$(missing_commands)
  [[ -z $left ]] || die "still missing after install: $left"
  say "installed ${PACKAGES[*]}"
}

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
  local limit=$1 what=$2 i
  shift 2
  for ((i = 0; i < limit * 10; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  die "timed out after ${limit}s waiting for $what (logs: $STATE/log)"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

spawn() { # spawn NAME COMMAND...: run in the background, detached, PID recorded
  local name=$1
  shift
  setsid "$@" </dev/null >>"$STATE/log/$name.out" 2>&1 &
  echo $! >"$STATE/pids/$name"
}

render() { # render TEMPLATE OUT
  sed -e "s|@STATE@|$STATE|g" -e "s|@HOST@|$HOST|g" -e "s|@CTLD_PORT@|$CTLD_PORT|g" \
    -e "s|@SLURMD_PORT@|$SLURMD_PORT|g" -e "s|@DBD_PORT@|$DBD_PORT|g" -e "s|@MYSQL_PORT@|$MYSQL_PORT|g" \
    -e "s|@NODE_LINE@|$NODE_LINE|g" "$1" >"$2"
}

node_idle() { [[ $(SLURM_CONF=$CONF sinfo -h -n "$HOST" -o %t 2>/dev/null) == idle ]]; }

cmd_start() {
  local left d alive=()
  left=$(missing_commands)
  [[ -z $left ]] || die "missing commands: $left (run: $0 install, as root)"
  [[ $(id -u) == 0 ]] || die "start needs root (SlurmUser=root, munged and MariaDB drop to their own users)"
  for d in "${STOP_ORDER[@]}"; do pid_of "$d" >/dev/null && alive+=("$d"); done
  if ((${#alive[@]} == ${#STOP_ORDER[@]})) && node_idle; then
    say "already running (state $STATE)"
    echo "export SLURM_CONF=$CONF"
    return 0
  fi
  ((${#alive[@]} == 0)) || die "some daemons of $STATE are alive (${alive[*]}): run '$0 stop' first"

  rm -rf "$STATE"
  mkdir -p "$STATE"/{etc,run,log,pids,munge,ctld,slurmd,mysql}
  chmod 755 "$STATE" "$STATE/etc"
  NODE_LINE=$(slurmd -C | head -n 1)
  render "$HERE/slurm.conf.in" "$CONF"
  render "$HERE/slurmdbd.conf.in" "$STATE/etc/slurmdbd.conf"
  chmod 600 "$STATE/etc/slurmdbd.conf"
  export SLURM_CONF=$CONF

  # munge: its own key and socket, run as the munge user
  dd if=/dev/urandom of="$STATE/munge/munge.key" bs=1024 count=1 status=none
  chown -R munge:munge "$STATE/munge"
  chmod 755 "$STATE/munge"  # munged wants the socket folder searchable by all
  chmod 400 "$STATE/munge/munge.key"
  spawn munged setpriv --reuid=munge --regid=munge --init-groups -- munged -F \
    --socket="$STATE/munge/munge.socket.2" --key-file="$STATE/munge/munge.key" \
    --pid-file="$STATE/munge/munged.pid" --log-file="$STATE/munge/munged.log" --seed-file="$STATE/munge/munged.seed"
  wait_for 10 munged test -S "$STATE/munge/munge.socket.2"

  # MariaDB on 127.0.0.1 only, root without password: the accounting store of slurmdbd
  chown mysql:mysql "$STATE/mysql"
  mariadb-install-db --no-defaults --user=mysql --datadir="$STATE/mysql/data" --auth-root-authentication-method=normal \
    --skip-test-db >>"$STATE/log/mariadb-install.log" 2>&1 || die "mariadb-install-db failed (see $STATE/log)"
  spawn mariadbd mariadbd --no-defaults --user=mysql --datadir="$STATE/mysql/data" --port="$MYSQL_PORT" \
    --bind-address=127.0.0.1 --socket="$STATE/mysql/mysqld.sock" --pid-file="$STATE/mysql/mariadbd.pid" \
    --log-error="$STATE/log/mariadbd.log" --skip-log-bin --innodb-buffer-pool-size=32M
  wait_for 30 MariaDB port_open "$MYSQL_PORT"

  spawn slurmdbd slurmdbd -D
  wait_for 30 slurmdbd port_open "$DBD_PORT"
  sacctmgr -i add cluster cxrldm >>"$STATE/log/sacctmgr.log" 2>&1 || true

  spawn slurmctld slurmctld -D -f "$CONF"
  wait_for 30 slurmctld port_open "$CTLD_PORT"
  spawn slurmd slurmd -D -f "$CONF"
  wait_for 60 "an idle node" node_idle
  say "running: $(sinfo -h -o '%P %D %c %t' | head -n 1) (state $STATE)"
  echo "export SLURM_CONF=$CONF"
}

stop_daemons() { # SIGTERM to each named daemon of ours, wait up to 10 s, then SIGKILL what is left
  local d pid i left
  for d in "$@"; do
    pid=$(pid_of "$d") && kill -TERM "$pid" 2>/dev/null || true
  done
  for ((i = 0; i < 100; i++)); do
    left=0
    for d in "$@"; do pid_of "$d" >/dev/null && left=1; done
    ((left == 0)) && return 0
    sleep 0.1
  done
  for d in "$@"; do
    if pid=$(pid_of "$d"); then
      say "$d ($pid) ignored SIGTERM; killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
}

cmd_stop() {
  local i
  if pid_of slurmctld >/dev/null && pid_of slurmd >/dev/null; then
    export SLURM_CONF=$CONF
    # jobs first, so that no job step outlives slurmd
    squeue -h -o %A 2>/dev/null | xargs -r scancel 2>/dev/null || true
    for ((i = 0; i < 300; i++)); do
      [[ -z $(squeue -h -o %A 2>/dev/null) ]] && break
      sleep 0.1
    done
  fi
  # in three waves: the SLURM daemons, then slurmdbd (which they report to), then MariaDB and munged
  stop_daemons slurmd slurmctld
  stop_daemons slurmdbd
  stop_daemons mariadbd munged
  say "stopped (state kept in $STATE until the next start)"
}

cmd_status() {
  local d pid rc=0
  for d in "${STOP_ORDER[@]}"; do
    if pid=$(pid_of "$d"); then echo "$d $pid running"; else echo "$d stopped"; rc=1; fi
  done
  ((rc == 0)) && SLURM_CONF=$CONF sinfo
  return $rc
}

case ${1:-} in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  env) echo "export SLURM_CONF=$CONF" ;;
  *) die "usage: $0 install|start|stop|status|env" ;;
esac
