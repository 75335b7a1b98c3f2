#!/usr/bin/env bash
# retrofleet launcher.
#   ./launch.sh N [learner flags]              a learner and N actors on this machine
#   ./launch.sh N --learner tcp://HOST:PORT    only N actors, joining a learner elsewhere
#   --actor-mode auto|host|process (either form): one actor host (N emulator processes, one
#                batched policy) or N one-process actors; auto asks the learner for its game and
#                picks by the rule in actor/mode.py (a host from two emulators a core, or for an
#                image game from two with a GPU)
#   --curve-dir DIR (either form): CURVE keys from `learner keygen DIR`; actor i uses actorI.key_secret
#                (an actor host uses actor0.key_secret for all its emulators)
#   ./launch.sh N --ray auto [--learner-on-ray] [--emulators-per-host K] [learner flags]
#                                               N actors (or N=auto: one per free CPU) on a Ray
#                                               cluster in actor hosts, placed and restarted by Ray
#                                               (python -m fleet)
#   ./launch.sh auto [learner flags]           a learner and one-process actors, their number chosen by
#                                               measurement while training runs (fleet.local_actors);
#                                               RETROFLEET_AUTOSCALE="--window 30 --settle 10 --max 8" tunes it
#   ./launch.sh test [pytest args]             the test suite
# On first use it creates .venv in the repo and installs the project into it.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
# The torch build installed when none is there yet; override for another build or version.
TORCH_SPEC="${RETROFLEET_TORCH:-torch==2.13.0}"

BAR_PID=""  # the progress bar's process (learner.progress), when stdout is a terminal
# With a bar on the terminal, a line first clears the bar's line; the bar redraws below it.
say() { if [[ -n "$BAR_PID" ]]; then printf '\r\033[2K[launch] %s\n' "$*"; else printf '[launch] %s\n' "$*"; fi; }
die() { printf 'launch.sh: error: %s\n' "$*" >&2; exit 2; }

usage() {
  cat <<'EOF'
usage: ./launch.sh N [learner flags]             learner + N actors on this machine
       ./launch.sh N --learner tcp://HOST:PORT   N actors joining a running learner
       add --actor-mode auto|host|process to either form: an actor host (N emulators, one
                   batched policy) or N one-process actors (default auto: a host from two emulators
                   a core, or for an image game from two with a GPU; else processes)
       add --curve-dir DIR to either form for CURVE keys (learner keygen DIR --actors N)
       ./launch.sh N --ray auto|HOST:PORT [--learner-on-ray] [--num-cpus X]
                   [--emulators-per-host K|auto] [--node-ip-address IP]
                   [--fleet-name NAME] [learner flags]
                                                 N actors on a Ray cluster (N=auto: one per free
                                                 CPU), as actor hosts of K emulators or one-process
                                                 actors; .venv/bin/fleet status | scale N | stop
       ./launch.sh auto [learner flags]          learner + one-process actors, starting from one a
                                                 core; their number is changed while training runs to
                                                 the one that gives the most frames/s without starving
                                                 the learner (changes and reasons: RUN_DIR/autoscale.jsonl;
                                                 RETROFLEET_AUTOSCALE="--window S --settle S --min N --max N")
       ./launch.sh test [pytest args]            run the test suite
Learner flags: see `.venv/bin/learner --help` (e.g. --env CartPole-v1 --mode sync
--total-frames 2000000 --run-dir runs/air1). Ctrl-C stops everything cleanly.
EOF
}

# ensure_env [EXTRAS]: the project and its optional extras (default "dev"; "dev,ray" for the
# tests and for --ray) installed in .venv, with the atari extra always (ale-py: Atari games);
# reinstalls when pyproject.toml changed.
ensure_env() {
  local extras="${1:-dev}" stamp="$VENV/.retrofleet-installed" want have
  want="$(cat "$ROOT/pyproject.toml" | sha1sum | cut -d' ' -f1)"
  have="$(cat "$stamp" 2>/dev/null)"
  # the stamp is "<pyproject hash> <extras>"; an install with ray also serves a plain run
  if [[ -x "$PY" && "${have%% *}" == "$want" && ( "${have#* }" == "$extras" || "${have#* }" == "dev,ray" ) ]]; then
    return 0
  fi
  say "setting up $VENV (first run only)..."
  local logf="$ROOT/.venv-install.log"
  : > "$logf"
  if [[ ! -x "$PY" ]]; then
    python3 -m venv "$VENV" >>"$logf" 2>&1 || { tail -5 "$logf"; die "could not create $VENV (is python3-venv installed?)"; }
  fi
  if ! "$PY" -c "import torch" >/dev/null 2>&1; then
    "$PY" -m pip install -q "$TORCH_SPEC" >>"$logf" 2>&1 || { tail -20 "$logf"; die "installing $TORCH_SPEC failed (log: $logf)"; }
  fi
  "$PY" -m pip install -q -e "$ROOT[$extras,atari]" >>"$logf" 2>&1 || { tail -20 "$logf"; die "installing retrofleet failed (log: $logf)"; }
  echo "$want $extras" > "$stamp"
  rm -f "$logf"
  say "environment ready"
}

if [[ $# -lt 1 || "$1" == "-h" || "$1" == "--help" ]]; then usage; exit 0; fi

if [[ "$1" == "test" ]]; then
  shift
  ensure_env dev,ray  # the Ray tests need the ray extra
  cd "$ROOT" && exec "$PY" -m pytest "$@"
fi

N="$1"; shift

REMOTE=""
CURVE_DIR=""
ACTOR_MODE="auto"
RAY_ADDR=""
FLEET_ARGS=()
LEARNER_ARGS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --curve-dir) [[ $# -ge 2 ]] || die "--curve-dir needs a directory"; CURVE_DIR="$2"; shift 2 ;;
    --curve-dir=*) CURVE_DIR="${1#--curve-dir=}"; shift ;;
    --learner) [[ $# -ge 2 ]] || die "--learner needs tcp://HOST:PORT"; REMOTE="$2"; shift 2 ;;
    --learner=*) REMOTE="${1#--learner=}"; shift ;;
    --actor-mode) [[ $# -ge 2 ]] || die "--actor-mode needs auto, host or process"; ACTOR_MODE="$2"; shift 2 ;;
    --actor-mode=*) ACTOR_MODE="${1#--actor-mode=}"; shift ;;
    --ray) [[ $# -ge 2 ]] || die "--ray needs auto or HOST:PORT"; RAY_ADDR="$2"; shift 2 ;;
    --ray=*) RAY_ADDR="${1#--ray=}"; shift ;;
    --learner-on-ray) FLEET_ARGS+=("$1"); shift ;;
    --num-cpus|--node-ip-address|--learner-num-cpus|--emulators-per-host)
      [[ $# -ge 2 ]] || die "$1 needs a value"; FLEET_ARGS+=("$1" "$2"); shift 2 ;;
    --fleet-name) [[ $# -ge 2 ]] || die "--fleet-name needs a name"; FLEET_ARGS+=(--name "$2"); shift 2 ;;
    *) LEARNER_ARGS+=("$1"); shift ;;
  esac
done

if [[ -n "$RAY_ADDR" ]]; then
  # On a Ray cluster: Ray places, restarts and scales the actors; fleet (python -m fleet) drives it.
  [[ "$N" =~ ^[0-9]+$ || "$N" == auto ]] || { usage >&2; die "first argument must be a number of actors or auto, got '$N'"; }
  ensure_env dev,ray
  cd "$ROOT"
  [[ -n "$REMOTE" ]] && FLEET_ARGS+=(--learner "$REMOTE")
  [[ -n "$CURVE_DIR" ]] && FLEET_ARGS+=(--curve-dir "$CURVE_DIR")
  FLEET_ARGS+=(--actor-mode "$ACTOR_MODE")  # fleet applies the same rule (actor/mode.py) per host
  exec "$PY" -m fleet --actors "$N" --ray "$RAY_ADDR" "${FLEET_ARGS[@]}" -- "${LEARNER_ARGS[@]}"
fi
[[ "$ACTOR_MODE" =~ ^(auto|host|process)$ ]] || die "--actor-mode must be auto, host or process, got '$ACTOR_MODE'"
[[ ${#FLEET_ARGS[@]} -eq 0 ]] || die "${FLEET_ARGS[0]} needs --ray (actors on a Ray cluster)"
[[ "$N" =~ ^[0-9]+$ || "$N" == auto ]] || { usage >&2; die "first argument must be the number of actors or auto, got '$N'"; }
AUTOSCALE_ARGS=()
if [[ "$N" == auto ]]; then
  [[ -z "$REMOTE" ]] || die "auto measures the learner's frames/s from its run directory: run it on the learner's host (without --learner)"
  [[ "$ACTOR_MODE" != host ]] || die "auto runs one-process actors (--actor-mode host takes a number of emulators)"
  ACTOR_MODE=process
  read -r -a AUTOSCALE_ARGS <<<"${RETROFLEET_AUTOSCALE:-}"
fi

ensure_env
cd "$ROOT"

ACTOR_KEYS=()
if [[ -n "$CURVE_DIR" ]]; then
  CURVE_DIR="$(cd "$CURVE_DIR" 2>/dev/null && pwd)" || die "--curve-dir: no such directory"
  [[ -f "$CURVE_DIR/learner.key" ]] || die "$CURVE_DIR/learner.key missing (make keys with: .venv/bin/learner keygen DIR --actors $N)"
  [[ -f "$CURVE_DIR/actor0.key_secret" ]] || die "$CURVE_DIR/actor0.key_secret missing (.venv/bin/learner keygen $CURVE_DIR --actors $N)"
  [[ -z "$REMOTE" ]] && LEARNER_ARGS+=(--curve-dir "$CURVE_DIR")
fi
# check_keys UNITS: one key pair per actor process (an actor host is one)
check_keys() {
  [[ -n "$CURVE_DIR" ]] || return 0
  for ((i = 0; i < $1; i++)); do
    [[ -f "$CURVE_DIR/actor$i.key_secret" ]] || die "$CURVE_DIR/actor$i.key_secret missing: $1 actors need $1 key pairs (.venv/bin/learner keygen $CURVE_DIR --actors $1), or run one actor host (--actor-mode host)"
  done
}
curve_args() {
  [[ -n "$CURVE_DIR" ]] && printf '%s\n' --curve-secret "$CURVE_DIR/actor$1.key_secret" --curve-server-key "$CURVE_DIR/learner.key"
}

LEARNER_PID=""
declare -a ACTOR_PIDS=() ACTOR_DEAD_SINCE=()
RESTARTS=0
STOPPING=0
RUN_DIR=""
# Local actors run at a lower CPU priority than the learner: when actors outnumber the cores
# the learner's updates pace the whole run, and a starved learner lets rollouts go stale.
# RETROFLEET_ACTOR_NICE=0 turns it off; actors joining a remote learner are not reniced.
ACTOR_NICE="${RETROFLEET_ACTOR_NICE-10}"
# Seconds to wait for the learner's "learner ready" line before giving up (printing its log).
READY_TIMEOUT="${RETROFLEET_READY_TIMEOUT:-120}"
[[ "$READY_TIMEOUT" =~ ^[0-9]+$ ]] || die "RETROFLEET_READY_TIMEOUT must be a number of seconds, got '$READY_TIMEOUT'"
[[ "$ACTOR_NICE" =~ ^[0-9]+$ ]] || die "RETROFLEET_ACTOR_NICE must be a number from 0 to 19, got '$ACTOR_NICE'"
[[ "$ACTOR_NICE" == 0 ]] && ACTOR_NICE=""

UNITS=0  # actor processes launch.sh supervises: N one-process actors, or one actor host

start_actor() {
  local i="$1" keys=() args=() logf
  mapfile -t keys < <(curve_args "$i")
  if [[ "$N" == auto ]]; then  # one supervisor: it starts and stops the actors (fleet.local_actors)
    ${ACTOR_NICE:+nice -n "$ACTOR_NICE"} "$PY" -m fleet.local_actors --learner "$ADDR" --run-dir "$RUN_DIR" \
      ${CURVE_DIR:+--curve-dir "$CURVE_DIR"} "${AUTOSCALE_ARGS[@]}" >>"$RUN_DIR/autoscale.log" 2>&1 &
    ACTOR_PIDS[$i]=$!
    ACTOR_DEAD_SINCE[$i]=""
    return
  elif [[ "$ACTOR_MODE" == host ]]; then
    args=(--emulators "$N"); logf="$RUN_DIR/actor_host.log"
  else
    logf="$RUN_DIR/actor_$i.log"
  fi
  ${ACTOR_NICE:+nice -n "$ACTOR_NICE"} "$VENV/bin/actor" --learner "$ADDR" "${args[@]}" "${keys[@]}" >>"$logf" 2>&1 &
  ACTOR_PIDS[$i]=$!
  ACTOR_DEAD_SINCE[$i]=""
}

alive() { [[ -n "$1" ]] && kill -0 "$1" 2>/dev/null; }

stop_bar() {
  [[ -n "$BAR_PID" ]] || return 0
  kill -TERM "$BAR_PID" 2>/dev/null; wait "$BAR_PID" 2>/dev/null
  BAR_PID=""
}

shutdown() {
  [[ $STOPPING == 1 ]] && return
  STOPPING=1
  say "stopping: learner writes a final checkpoint, actors exit..."
  stop_bar
  local pids=()
  for p in "${ACTOR_PIDS[@]}"; do alive "$p" && pids+=("$p"); done
  alive "$LEARNER_PID" && pids+=("$LEARNER_PID")
  [[ ${#pids[@]} -gt 0 ]] && kill -TERM "${pids[@]}" 2>/dev/null
  local deadline=$((SECONDS + 9))
  while [[ $SECONDS -lt $deadline ]]; do
    local left=0
    for p in "${pids[@]}"; do alive "$p" && left=1; done
    [[ $left == 0 ]] && break
    sleep 0.2
  done
  for p in "${pids[@]}"; do alive "$p" && { say "process $p did not stop in time; killing it"; kill -KILL "$p" 2>/dev/null; }; done
  wait 2>/dev/null
}

on_signal() { shutdown; say "stopped${RUN_DIR:+; run directory $RUN_DIR}"; exit 130; }
trap on_signal INT TERM

if [[ -n "$REMOTE" ]]; then
  [[ ${#LEARNER_ARGS[@]} -eq 0 ]] || die "with --learner only actors start here; learner flags (${LEARNER_ARGS[*]}) belong on the learner's host"
  ADDR="$REMOTE"
  ACTOR_NICE=""
  RUN_DIR="$ROOT/runs/actors-$(hostname)-$(date +%Y%m%d-%H%M%S)"
  mkdir -p "$RUN_DIR"
else
  mkdir -p "$ROOT/runs"
  BOOT_LOG="$ROOT/runs/.learner-$$.log"
  "$VENV/bin/learner" "${LEARNER_ARGS[@]}" >"$BOOT_LOG" 2>&1 &
  LEARNER_PID=$!
  # wait for the learner's ready line (it names the run directory and the port), not forever
  ready_by=$((SECONDS + READY_TIMEOUT))
  while ! grep -q "^learner ready:" "$BOOT_LOG" 2>/dev/null; do
    if ! alive "$LEARNER_PID"; then
      wait "$LEARNER_PID"; rc=$?
      cat "$BOOT_LOG" >&2; rm -f "$BOOT_LOG"
      exit "$rc"
    fi
    if (( SECONDS >= ready_by )); then
      printf 'launch.sh: error: the learner was not ready after %s s (RETROFLEET_READY_TIMEOUT); its last lines:\n' "$READY_TIMEOUT" >&2
      tail -n 20 "$BOOT_LOG" >&2
      kill -KILL "$LEARNER_PID" 2>/dev/null; wait "$LEARNER_PID" 2>/dev/null
      rm -f "$BOOT_LOG"
      exit 1
    fi
    sleep 0.2
  done
  ready="$(grep -m1 "^learner ready:" "$BOOT_LOG")"
  RUN_DIR="$(sed -E 's/.*\(run dir ([^,]+),.*/\1/' <<<"$ready")"
  PORT="$(sed -E 's#^learner ready: tcp://[^ ]*:([0-9]+) .*#\1#' <<<"$ready")"
  ADDR="tcp://127.0.0.1:$PORT"
  mkdir -p "$RUN_DIR"
  mv "$BOOT_LOG" "$RUN_DIR/learner.log"
  say "$ready"
fi

if [[ "$ACTOR_MODE" == auto ]]; then
  mapfile -t keys < <(curve_args 0)
  ACTOR_MODE="$("$PY" -m actor.mode --learner "$ADDR" --actors "$N" "${keys[@]}" 2>"$RUN_DIR/actor_mode.log")" \
    || { cat "$RUN_DIR/actor_mode.log" >&2; die "could not ask the learner at $ADDR for its game"; }
  say "actor mode $(cat "$RUN_DIR/actor_mode.log")"
fi
if [[ "$ACTOR_MODE" == host || "$N" == auto ]]; then UNITS=1; else UNITS="$N"; fi
[[ "$N" == auto ]] || check_keys "$UNITS"
for ((i = 0; i < UNITS; i++)); do start_actor "$i"; done
AUTOSCALE_SEEN=0  # lines of autoscale.log already echoed to the console
if [[ "$N" == auto ]]; then
  say "one-process actors joining $ADDR, their number chosen by measurement; logs in $RUN_DIR (autoscale.log, autoscale.jsonl, actor_<i>.log)"
elif [[ "$ACTOR_MODE" == host ]]; then
  say "an actor host of $N emulators joining $ADDR; logs in $RUN_DIR (learner.log, actor_host.log)"
else
  say "$N actors joining $ADDR; logs in $RUN_DIR (learner.log, actor_<i>.log)"
fi
# A run with an end (--total-frames, --stop-at-return, --max-minutes) gets a progress bar on a
# terminal, drawn from the run directory; logs and pipes get the plain status line.
if [[ -n "$LEARNER_PID" && -t 1 ]] && "$PY" -m learner.progress "$RUN_DIR" --check; then
  "$PY" -m learner.progress "$RUN_DIR" &
  BAR_PID=$!
fi

last_status=0
while true; do
  if [[ -n "$LEARNER_PID" ]] && ! alive "$LEARNER_PID"; then
    wait "$LEARNER_PID"; rc=$?
    stop_bar
    STOPPING=0; LEARNER_PID=""; shutdown
    tail -n 2 "$RUN_DIR/learner.log"
    say "learner exited with code $rc; run directory $RUN_DIR"
    exit "$rc"
  fi
  up=0
  for ((i = 0; i < UNITS; i++)); do
    p="${ACTOR_PIDS[$i]}"
    if alive "$p"; then up=$((up + 1)); continue; fi
    if [[ -z "${ACTOR_DEAD_SINCE[$i]}" ]]; then
      wait "$p" 2>/dev/null; code=$?
      ACTOR_DEAD_SINCE[$i]=$SECONDS
      say "actor $i (pid $p) exited with code $code; restarting in 2 s"
    elif (( SECONDS - ACTOR_DEAD_SINCE[$i] >= 2 )); then
      start_actor "$i"; RESTARTS=$((RESTARTS + 1)); up=$((up + 1))
    fi
  done
  if [[ "$N" == auto && -f "$RUN_DIR/autoscale.log" ]]; then  # each change and its reason on the console
    total="$(wc -l <"$RUN_DIR/autoscale.log")"
    if (( total > AUTOSCALE_SEEN )); then
      while IFS= read -r line; do [[ "$line" == autoscale:* ]] && say "$line"; done \
        < <(tail -n "+$((AUTOSCALE_SEEN + 1))" "$RUN_DIR/autoscale.log" | head -n "$((total - AUTOSCALE_SEEN))")
      AUTOSCALE_SEEN=$total
    fi
  fi
  if [[ -z "$BAR_PID" ]] && (( SECONDS - last_status >= 5 )); then
    last_status=$SECONDS
    status=""
    [[ -n "$LEARNER_PID" ]] && status="$(grep -E '^\[ *[0-9]+s\]' "$RUN_DIR/learner.log" | tail -n 1)"
    if [[ "$N" == auto ]]; then what="auto ($(tail -n 1 "$RUN_DIR/autoscale.jsonl" 2>/dev/null | sed -E 's/.*"to": ([0-9]+).*/\1/') now)"
    elif [[ "$ACTOR_MODE" == host ]]; then what="host $up/1 ($N emulators)"; else what="$up/$N"; fi
    say "actors up $what, restarts $RESTARTS${status:+ | $status}"
  fi
  sleep 0.5
done
