#!/usr/bin/env bash
# switchyard side by side with LiteLLM and Portkey, in one run, on one machine.
#
#   load-tests/run.sh           every scenario, every target (installs oha, LiteLLM, Portkey)
#   load-tests/run.sh --quick   a few seconds per scenario, direct and switchyard only (CI):
#                               fails if switchyard answers anything but 2xx
#   load-tests/run.sh --audit-cost
#                               only the audit log's cost (AUDIT_PAIRS pairs, default 60),
#                               printed, not written to results/latest.md: for changes to
#                               the audit path
#
# Targets: the mock directly (the physical limit), switchyard, LiteLLM (2 workers), Portkey.
# Results: load-tests/results/latest.md and chart.svg (raw JSON in results/raw/).
set -euo pipefail

QUICK=0
AUDIT_ONLY=0
[[ "${1:-}" == "--quick" ]] && QUICK=1
[[ "${1:-}" == "--audit-cost" ]] && AUDIT_ONLY=1
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
RAW="$HERE/results/raw"
mkdir -p "$RAW"
rm -f "$RAW"/*.json

MOCK_PORT=${BENCH_MOCK_PORT:-9100}
SLOW_PORT=${BENCH_SLOW_MOCK_PORT:-9101}
SWITCHYARD_PORT=${BENCH_GATEWAY_PORT:-9200}
AUDIT_OFF_PORT=$(( SWITCHYARD_PORT + 1 ))
LITELLM_PORT=9300
PORTKEY_PORT=9400
MASTER_KEY=sk-bench-master
export BENCH_MOCK_PORT=$MOCK_PORT BENCH_SLOW_MOCK_PORT=$SLOW_PORT BENCH_GATEWAY_PORT=$SWITCHYARD_PORT
export BENCH_UPSTREAM_KEY=sk-bench-upstream
export BENCH_DATA_DIR=${BENCH_DATA_DIR:-/tmp/switchyard-bench-data}

# CPU placement: gateways on CPU 0; the mock and the load generator on CPU 1, so a
# gateway never competes with the load it is measured under. Scenario 1 (latency at
# concurrency 1) runs everything on CPU 0: on this VM a cross-CPU wake-up costs ~50 µs,
# which would swamp the sub-millisecond cost being measured. One CPU: no pinning.
if [[ $(nproc) -ge 2 ]]; then GW_CPU=0; LOAD_CPU=1; else GW_CPU=0; LOAD_CPU=0; fi

if [[ $QUICK == 1 ]]; then
  LATENCY_REQUESTS=200; SECONDS_PER_RUN=3; OPEN_STREAMS=200; SLOW_CHUNKS=3; PROFILE=dev; BIN="$ROOT/target/debug"
  AUDIT_PAIRS=2; AUDIT_SECONDS=2
else
  LATENCY_REQUESTS=2000; SECONDS_PER_RUN=20; PROFILE=release; BIN="$ROOT/target/release"
  AUDIT_PAIRS=${AUDIT_PAIRS:-60}; AUDIT_SECONDS=2; COUNTED_REQUESTS=5000
  # 10,000 streams need ~20,000 sockets in the gateway alone (client + upstream side);
  # the open-file hard limit caps what a run here can hold: stay below it.
  HARD_LIMIT=$(ulimit -Hn)
  OPEN_STREAMS=$(( HARD_LIMIT >= 21000 ? 10000 : (HARD_LIMIT - 1000) / 2 / 1000 * 1000 ))
  SLOW_CHUNKS=30
fi
ulimit -n "$(ulimit -Hn)"

# The audit log's cost is measured against a second switchyard with `[audit] enabled =
# false` (a config beside the real one, so its relative paths hold), on the next port.
AUDIT_OFF_CONFIG="$HERE/switchyard/config.audit-off.toml"
{ cat "$HERE/switchyard/config.toml"; printf '\n[audit]\nenabled = false\n'; } >"$AUDIT_OFF_CONFIG"

PIDS=()
cleanup() {
  rm -f "$AUDIT_OFF_CONFIG"
  for pid in "${PIDS[@]}"; do kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

log() { echo "==> $*" >&2; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# Starts a command in its own process group (so helpers and workers stop with it);
# its pid, which is also the group id, is left in STARTED.
start() {
  local name=$1; shift
  setsid "$@" >"$RAW/$name.log" 2>&1 &
  STARTED=$!
  PIDS+=("$STARTED")
}

wait_http() {
  for _ in $(seq 1 300); do
    curl -s -o /dev/null "$1" && return 0
    sleep 0.2
  done
  echo "not reachable: $1" >&2; return 1
}

group_pids() { pgrep -g "$1" || true; }
pin() { for pid in $(group_pids "$1"); do taskset -a -p -c "$2" "$pid" >/dev/null 2>&1 || true; done; }
rss_kb() { local total=0; for pid in $(group_pids "$1"); do total=$(( total + $(awk '/VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0) )); done; echo "$total"; }
# CPU time (user + system, in clock ticks) of every process of a group so far.
cpu_ticks() { local total=0; for pid in $(group_pids "$1"); do total=$(( total + $(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0) )); done; echo "$total"; }

# ---- build and install ------------------------------------------------------------------
log "building switchyard and the harness ($PROFILE)"
(cd "$ROOT" && cargo build --profile "$PROFILE" -p switchyard -p switchyard-load-tests --bins)

TARGETS=(direct switchyard)
if [[ $AUDIT_ONLY == 1 ]]; then
  TARGETS=()
elif [[ $QUICK == 0 ]]; then
  command -v oha >/dev/null || { log "installing oha"; cargo install oha --locked; }
  if [[ ! -x "$HERE/.venv-litellm/bin/litellm" ]]; then
    log "installing LiteLLM 1.106.2 (never 1.107.0: a compromised release)"
    python3 -m venv "$HERE/.venv-litellm"
    "$HERE/.venv-litellm/bin/pip" install -q --disable-pip-version-check 'litellm[proxy]==1.106.2'
  fi
  if [[ ! -d "$HERE/.portkey/node_modules/@portkey-ai/gateway" ]]; then
    log "installing Portkey gateway 1.15.2"
    mkdir -p "$HERE/.portkey"
    # A package.json of our own: `npm init -y` refuses the folder's name (it starts with a dot).
    echo '{"name": "portkey-bench", "private": true}' >"$HERE/.portkey/package.json"
    (cd "$HERE/.portkey" && npm install --no-audit --no-fund @portkey-ai/gateway@1.15.2)
  fi
  TARGETS+=(litellm portkey)
fi

# ---- start everything -------------------------------------------------------------------
log "starting the mocks on CPU $LOAD_CPU"
start mock taskset -c "$LOAD_CPU" "$BIN/mock-upstream" --listen "127.0.0.1:$MOCK_PORT" --chunks 20
MOCK=$STARTED
start mock-slow taskset -c "$LOAD_CPU" "$BIN/mock-upstream" --listen "127.0.0.1:$SLOW_PORT" --chunks "$SLOW_CHUNKS" --chunk-delay-ms 1000
wait_http "http://127.0.0.1:$MOCK_PORT/v1/models"
wait_http "http://127.0.0.1:$SLOW_PORT/v1/models"

# Each gateway runs alone: started when its turn comes, stopped after its scenarios, so
# none pays for another's background work (LiteLLM's workers keep a CPU busy at idle).
declare -A GROUP URL MODEL SLOW_MODEL AUTH EXTRA
URL[direct]="http://127.0.0.1:$MOCK_PORT"; MODEL[direct]=mock; SLOW_MODEL[direct]=mock; AUTH[direct]=none; EXTRA[direct]=""
URL[switchyard]="http://127.0.0.1:$SWITCHYARD_PORT"; MODEL[switchyard]=bench/mock; SLOW_MODEL[switchyard]=benchslow/mock
AUTH[switchyard]="authorization: Bearer $MASTER_KEY"; EXTRA[switchyard]=""
for variant in audit-on audit-off; do
  URL[$variant]=${URL[switchyard]}; MODEL[$variant]=bench/mock; SLOW_MODEL[$variant]=benchslow/mock; EXTRA[$variant]=""
done
URL[audit-off]="http://127.0.0.1:$AUDIT_OFF_PORT"
URL[litellm]="http://127.0.0.1:$LITELLM_PORT"; MODEL[litellm]=mock; SLOW_MODEL[litellm]=mock-slow
AUTH[litellm]="authorization: Bearer $MASTER_KEY"; EXTRA[litellm]=""
URL[portkey]="http://127.0.0.1:$PORTKEY_PORT"; MODEL[portkey]=mock; SLOW_MODEL[portkey]=mock
AUTH[portkey]="authorization: Bearer sk-unused"; EXTRA[portkey]="x-portkey-provider: openai"

# start_target <name>: starts it pinned to the gateway CPU, waits until it answers. A
# switchyard runs under the command in UNDER, if any (valgrind, for counted runs).
UNDER=()
start_target() {
  case $1 in
    direct) GROUP[direct]=$MOCK; return ;;
    switchyard|audit-on|audit-off)
      local config="$HERE/switchyard/config.toml" port=$SWITCHYARD_PORT data=$BENCH_DATA_DIR
      if [[ $1 == audit-off ]]; then config=$AUDIT_OFF_CONFIG; port=$AUDIT_OFF_PORT; data=$BENCH_DATA_DIR-audit-off; fi
      rm -rf "$data"
      start "$1" env SWITCHYARD_MASTER_KEY=$MASTER_KEY BENCH_GATEWAY_PORT="$port" BENCH_DATA_DIR="$data" \
        taskset -c "$GW_CPU" "${UNDER[@]}" "$BIN/switchyard" serve --config "$config"
      GROUP[$1]=$STARTED
      wait_http "${URL[$1]}/healthz"
      # Measured as a client with a virtual key: key lookup, rate limits (requests and
      # tokens) and a budget reservation on every request, settled with real usage.
      VIRTUAL_KEY=$(curl -fsS -X POST "${URL[$1]}/admin/keys" -H "authorization: Bearer $MASTER_KEY" \
        -d '{"name":"bench","limits":{"rpm":100000000,"tpm":100000000000},"budgets":[{"amount":1000000,"unit":"usd","period":"month"}]}' \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["key"])')
      AUTH[$1]="authorization: Bearer $VIRTUAL_KEY" ;;
    litellm)
      start litellm env LITELLM_MASTER_KEY=$MASTER_KEY LITELLM_LOCAL_MODEL_COST_MAP=True taskset -c "$GW_CPU" \
        "$HERE/.venv-litellm/bin/litellm" --config "$HERE/litellm/config.yaml" --host 127.0.0.1 --port $LITELLM_PORT --num_workers 2
      GROUP[litellm]=$STARTED
      wait_http "${URL[litellm]}/health/liveliness" ;;
    portkey)
      start portkey env PORT=$PORTKEY_PORT taskset -c "$GW_CPU" \
        node "$HERE/.portkey/node_modules/@portkey-ai/gateway/build/start-server.js" --port=$PORTKEY_PORT
      GROUP[portkey]=$STARTED
      wait_http "${URL[portkey]}/" ;;
  esac
  sleep 3
}

stop_target() {
  [[ $1 == direct ]] && return
  kill -- "-${GROUP[$1]}" 2>/dev/null || true
  sleep 2
  kill -9 -- "-${GROUP[$1]}" 2>/dev/null || true
}

# ---- scenarios -----------------------------------------------------------------------------
PROMPT='"messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Say hello in one short sentence, please."}],"max_tokens":64,"temperature":0.7'

# loadgen <target> <scenario> <cpu> <fast|slow> <stream true|false> args...
loadgen() {
  local target=$1 scenario=$2 cpu=$3 mock=$4 stream=$5; shift 5
  local model=${MODEL[$target]} host="127.0.0.1:$MOCK_PORT"
  if [[ $mock == slow ]]; then model=${SLOW_MODEL[$target]}; host="127.0.0.1:$SLOW_PORT"; fi
  local url=${URL[$target]}/v1/chat/completions
  [[ $target == direct && $mock == slow ]] && url="http://$host/v1/chat/completions"
  local args=(--url "$url" --body "{\"model\":\"$model\",$PROMPT,\"stream\":$stream}" --label "$target/$scenario")
  [[ ${AUTH[$target]} != none ]] && args+=(--header "${AUTH[$target]}")
  [[ -n ${EXTRA[$target]} ]] && args+=(--header "${EXTRA[$target]}" --header "x-portkey-custom-host: http://$host/v1")
  taskset -c "$cpu" "$BIN/loadgen" "${args[@]}" "$@" >"$RAW/$target-$scenario.json"
  cat "$RAW/$target-$scenario.json" >&2
}

# The audit log's cost: scenario 2 against the gateway with it off and the one with it on,
# both running on the gateway CPU (each idle while the other is measured), in AUDIT_PAIRS
# pairs of short slices, alternating which goes first. This VM's throughput drifts by
# ±5-10 % between runs a minute apart, as much as the cost being measured; slices seconds
# apart share the drift, so it cancels in each pair. After each audit-on slice the harness
# waits until the audit writer (idle scheduling class: it defers its work under full
# load) has moved every record into the database, so that work never runs during the
# next slice; it is counted in the CPU per request written out.
run_audit_cost() {
  local pair variant order ticks_before ticks_loaded ticks_drained
  for variant in audit-off audit-on; do
    start_target "$variant"
    loadgen "$variant" warmup "$LOAD_CPU" fast false --connections 50 --requests 3000 >/dev/null 2>&1 || true
  done
  wait_audit_written "${URL[audit-on]}"
  for pair in $(seq 1 "$AUDIT_PAIRS"); do
    log "audit log cost, pair $pair/$AUDIT_PAIRS"
    order=(audit-off audit-on)
    (( pair % 2 == 0 )) && order=(audit-on audit-off)
    for variant in "${order[@]}"; do
      ticks_before=$(cpu_ticks "${GROUP[$variant]}")
      loadgen "$variant" "throughput-$pair" "$LOAD_CPU" fast false --connections 50 --duration "$AUDIT_SECONDS" 2>/dev/null
      ticks_loaded=$(cpu_ticks "${GROUP[$variant]}")
      [[ $variant == audit-on ]] && wait_audit_written "${URL[$variant]}"
      ticks_drained=$(cpu_ticks "${GROUP[$variant]}")
      echo "{\"ticks_per_second\": $(getconf CLK_TCK), \"cpu_ticks_loaded\": $(( ticks_loaded - ticks_before )), \"cpu_ticks_written\": $(( ticks_drained - ticks_before ))}" \
        >"$RAW/$variant-cpu-$pair.json"
    done
  done
  stop_target audit-on
  stop_target audit-off
}

# The audit log's cost counted rather than timed: each gateway under callgrind (valgrind's
# instruction counter with its cache simulator), the same requests, and the counts of
# the request thread (the one tokio worker on one CPU) between a warm-up and the end.
# Counts do not drift with the VM, so this shows a change too small for the timed
# slices to resolve; it does not see what callgrind does not simulate (the kernel, the
# writer's work, real memory latency), which the timed slices do.
run_audit_counts() {
  local variant pid
  if ! command -v callgrind_control >/dev/null; then
    log "installing valgrind"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
  fi
  for variant in audit-off audit-on; do
    log "audit log cost, counted: $variant under callgrind"
    rm -f "$RAW/callgrind-$variant".*
    UNDER=(valgrind --tool=callgrind --cache-sim=yes --separate-threads=yes --callgrind-out-file="$RAW/callgrind-$variant.%p")
    start_target "$variant"
    UNDER=()
    pid=${GROUP[$variant]}
    loadgen "$variant" counted-warmup "$LOAD_CPU" fast false --connections 50 --requests 1000 2>/dev/null
    callgrind_control --zero "$pid" >/dev/null
    loadgen "$variant" counted "$LOAD_CPU" fast false --connections 50 --requests "$COUNTED_REQUESTS" 2>/dev/null
    callgrind_control --dump "$pid" >/dev/null
    stop_target "$variant"
  done
}

# Waits until the audit journal has no record the database lacks (at most two minutes).
wait_audit_written() {
  local pending
  for _ in $(seq 1 600); do
    pending=$(curl -fsS "$1/metrics" -H "authorization: Bearer $MASTER_KEY" | awk '$1 == "switchyard_audit_pending_bytes" {print $2}')
    [[ $pending == 0 ]] && return 0
    sleep 0.2
  done
  log "the audit writer did not catch up within two minutes"
}

for target in "${TARGETS[@]}"; do
  log "$target: starting on CPU $GW_CPU"
  start_target "$target"
  group=${GROUP[$target]}
  idle_rss=$(rss_kb "$group")
  log "$target: warm-up"
  loadgen "$target" warmup "$LOAD_CPU" fast false --connections 10 --requests 500 >/dev/null 2>&1 || true

  log "$target: scenario 1, added latency (concurrency 1, $LATENCY_REQUESTS requests, all on CPU $GW_CPU)"
  pin "$group" "$GW_CPU"; pin "$MOCK" "$GW_CPU"
  loadgen "$target" latency "$GW_CPU" fast false --connections 1 --requests "$LATENCY_REQUESTS"
  pin "$MOCK" "$LOAD_CPU"

  log "$target: scenario 2, throughput (50 connections, ${SECONDS_PER_RUN}s)"
  loadgen "$target" throughput "$LOAD_CPU" fast false --connections 50 --duration "$SECONDS_PER_RUN"
  echo "{\"idle_rss_kb\": $idle_rss, \"rss_after_throughput_kb\": $(rss_kb "$group")}" >"$RAW/$target-memory.json"

  if [[ $QUICK == 0 ]]; then
    log "$target: scenario 2 again, measured by oha (an independent load generator)"
    oha_args=(-z "${SECONDS_PER_RUN}s" -c 50 --no-tui --output-format json -m POST -T application/json
      -d "{\"model\":\"${MODEL[$target]}\",$PROMPT,\"stream\":false}")
    [[ ${AUTH[$target]} != none ]] && oha_args+=(-H "${AUTH[$target]}")
    [[ -n ${EXTRA[$target]} ]] && oha_args+=(-H "${EXTRA[$target]}" -H "x-portkey-custom-host: http://127.0.0.1:$MOCK_PORT/v1")
    taskset -c "$LOAD_CPU" oha "${oha_args[@]}" "${URL[$target]}/v1/chat/completions" >"$RAW/$target-throughput-oha.json"
  fi

  log "$target: scenario 3, streaming (50 connections, ${SECONDS_PER_RUN}s, 20 chunks)"
  loadgen "$target" streaming "$LOAD_CPU" fast true --connections 50 --duration "$SECONDS_PER_RUN"

  log "$target: scenario 4, $OPEN_STREAMS concurrent streams held open ($SLOW_CHUNKS chunks, 1 a second)"
  peak_file="$RAW/$target-peak.txt"; echo 0 >"$peak_file"
  ( while :; do r=$(rss_kb "$group"); (( r > $(cat "$peak_file") )) && echo "$r" >"$peak_file"; sleep 0.5; done ) &
  sampler=$!
  loadgen "$target" open-streams "$LOAD_CPU" slow true --connections "$OPEN_STREAMS" --requests "$OPEN_STREAMS" --ramp-ms 3000
  kill "$sampler" 2>/dev/null || true
  echo "{\"peak_rss_kb\": $(cat "$peak_file")}" >"$RAW/$target-open-streams-rss.json"
  stop_target "$target"
  if [[ $target == switchyard ]]; then
    run_audit_cost
    [[ $QUICK == 0 ]] && run_audit_counts
  fi
done

# ---- report -------------------------------------------------------------------------------
if [[ $AUDIT_ONLY == 1 ]]; then
  run_audit_counts
  run_audit_cost
  python3 "$HERE/report.py" --raw "$RAW" --audit-only
  exit 0
fi
python3 "$HERE/report.py" --raw "$RAW" --out "$HERE/results" --quick "$QUICK" \
  --placement "gateways on CPU $GW_CPU; mock and load generator on CPU $LOAD_CPU; scenario 1 all on CPU $GW_CPU" \
  --open-streams "$OPEN_STREAMS" --command "load-tests/run.sh${1:+ $1}"

if [[ $QUICK == 1 ]]; then
  python3 - "$RAW" <<'PY'
import json, pathlib, sys
bad = []
for path in sorted(pathlib.Path(sys.argv[1]).glob("switchyard-*.json")):
    data = json.loads(path.read_text())
    if "ok" in data and (data["non_2xx"] or data["errors"] or not data["ok"]):
        bad.append(f"{path.name}: ok={data['ok']} non_2xx={data['non_2xx']} errors={data['errors']} first failure: {data['first_failure']}")
if bad:
    sys.exit("switchyard failed requests during the benchmark:\n" + "\n".join(bad))
print("quick benchmark: switchyard answered every request with 2xx")
PY
fi
