# Shell helpers shared by e2e/cluster.sh and e2e/node.sh: where the cluster's state
# lives, background processes kept by pid file under $state, logs under $logs, and waits
# on a condition.
# shellcheck shell=bash

# The cluster's names and ports, and the state both scripts keep under .e2e/ (or
# LLM_OPERATOR_E2E_STATE): logs, the pinned binaries (first on PATH), the admin kubeconfig.
e2e_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$e2e_dir/.." && pwd)
# shellcheck source=cluster/settings.env
source "$e2e_dir/cluster/settings.env"
state=${LLM_OPERATOR_E2E_STATE:-$root/.e2e}
logs=$state/logs
bin_dir=$state/bin
# shellcheck disable=SC2034 # for the scripts that source this file
admin_kubeconfig=$state/kubeconfig
export PATH=$bin_dir:$PATH

log() { printf '[%s] %s\n' "${log_prefix:-cluster}" "$*" >&2; }

running() { # name
  local pid_file=$state/$1.pid
  [ -f "$pid_file" ] && kill -0 "$(cat "$pid_file")" 2>/dev/null
}

start_background() { # name command...
  local name=$1
  shift
  running "$name" && return 0
  # Appended, so a restarted operator's log keeps what it logged before.
  echo "--- $name starting at $(date -u +%FT%TZ)" >>"$logs/$name.log"
  setsid "$@" >>"$logs/$name.log" 2>&1 </dev/null &
  echo $! >"$state/$name.pid"
  log "$name started (pid $!, log $logs/$name.log)"
}

stop_background() { # name
  local pid_file=$state/$1.pid
  if running "$1"; then
    kill -- -"$(cat "$pid_file")" 2>/dev/null || kill "$(cat "$pid_file")" 2>/dev/null || true
    wait_until 30 "$1 to exit" bash -c "! kill -0 $(cat "$pid_file")"
    log "$1 stopped"
  fi
  rm -f "$pid_file"
}

wait_until() { # seconds description command...
  local deadline=$((SECONDS + $1)) what=$2
  shift 2
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
      log "timed out waiting for $what"
      return 1
    fi
    sleep 1
  done
}
