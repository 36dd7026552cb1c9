#!/usr/bin/env bash
# The cluster's servers without a cluster: an S3 server (SeaweedFS `weed mini`, standing in for
# MinIO) and an MLflow tracking server (SQLite store, artifacts on that S3), both on 127.0.0.1.
#
#   infra/local-stack.sh start     start both (again: reports the running stack)
#   infra/local-stack.sh status    exit 0 when both answer, 3 otherwise
#   infra/local-stack.sh stop      stop both; data stays in the work folder
#   source "$(infra/local-stack.sh env)"   export AWS_ENDPOINT_URL, MLFLOW_TRACKING_URI, keys...
#
# Settings (environment):
#   LOCAL_STACK_DIR          work folder: data, logs, PIDs, env file
#                            (default ${XDG_STATE_HOME:-~/.local/state}/interactavatar-local-stack)
#   LOCAL_STACK_S3_PORT      S3 port (default 9000, MinIO's)
#   LOCAL_STACK_MLFLOW_PORT  MLflow port (default 5000)
#   LOCAL_STACK_BUCKETS      buckets made at start (default dvc,mlflow,models)
#   LOCAL_STACK_BIN          folder holding weed, mlflow and python (default <repo>/.venv/bin)
#   AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY
#                            the S3 key pair; when unset, one is generated at the first start
#                            and kept in the work folder (mode 600), never in the repository.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work_dir="${LOCAL_STACK_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/interactavatar-local-stack}"
bin_dir="${LOCAL_STACK_BIN:-$repo_root/.venv/bin}"
s3_port="${LOCAL_STACK_S3_PORT:-9000}"
mlflow_port="${LOCAL_STACK_MLFLOW_PORT:-5000}"
buckets="${LOCAL_STACK_BUCKETS:-dvc,mlflow,models}"

env_file="$work_dir/local-stack.env"
keys_file="$work_dir/s3-keys.env"
weed_pid_file="$work_dir/weed.pid"
mlflow_pid_file="$work_dir/mlflow.pid"
weed_ports_file="$work_dir/weed-ports"
state_file="$work_dir/ports"

export MLFLOW_DISABLE_TELEMETRY=true

die() { echo "local-stack: $*" >&2; exit 1; }

is_running() {  # pid file -> 0 when its process is alive
    [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

http_answers() {  # url -> 0 when anything answers HTTP there (a 403 from S3 counts)
    "$bin_dir/python" - "$1" <<'EOF'
import sys, urllib.error, urllib.request
try:
    urllib.request.urlopen(sys.argv[1], timeout=2)
except urllib.error.HTTPError:
    pass
except OSError:
    sys.exit(1)
EOF
}

wait_for() {  # url seconds name pid_file
    local deadline=$((SECONDS + $2))
    until http_answers "$1"; do
        is_running "$4" || die "$3 exited during start; see $work_dir/$3.log"
        ((SECONDS < deadline)) || die "$3 did not answer $1 within $2 s; see $work_dir/$3.log"
        sleep 0.5
    done
}

# SeaweedFS listens on an HTTP port and a gRPC port per server (master, volume, filer, admin, S3).
# Left to itself it puts each gRPC port at HTTP port + 10000, which does not exist above 55535 (an S3
# port of 60000 crashed the start): every gRPC port is picked here, free, and passed explicitly.
# Prints the master, volume, filer and admin HTTP ports, then the gRPC ports of those four and of S3.
pick_weed_ports() {
    "$bin_dir/python" - "$s3_port" "$mlflow_port" <<'EOF'
import socket, sys

def free(port):
    with socket.socket() as s:
        # As the servers bind: a port whose old connections linger in TIME_WAIT is free.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True

s3_port, mlflow_port = map(int, sys.argv[1:])
for port, name in ((s3_port, "LOCAL_STACK_S3_PORT"), (mlflow_port, "LOCAL_STACK_MLFLOW_PORT")):
    if not 0 < port < 65536:
        sys.exit(f"{name}={port} is not a port (1-65535)")
    if not free(port):
        sys.exit(f"port {port} is taken: set {name} to a free port")
taken = {s3_port, mlflow_port}
picked = []
while len(picked) < 9:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    if port not in taken:
        picked.append(port)
        taken.add(port)
print(*picked)
EOF
}

ensure_keys() {
    if [[ -n "${AWS_ACCESS_KEY_ID:-}" && -n "${AWS_SECRET_ACCESS_KEY:-}" ]]; then
        access_key="$AWS_ACCESS_KEY_ID"
        secret_key="$AWS_SECRET_ACCESS_KEY"
    else
        if [[ ! -f "$keys_file" ]]; then
            (umask 077 && "$bin_dir/python" -c \
                'import secrets; print(f"access_key={secrets.token_hex(10)}\nsecret_key={secrets.token_hex(20)}")' \
                > "$keys_file")
        fi
        access_key="$(sed -n 's/^access_key=//p' "$keys_file")"
        secret_key="$(sed -n 's/^secret_key=//p' "$keys_file")"
    fi
    # JSON written by Python so that any character in a key pair from the environment survives.
    (umask 077 && ACCESS_KEY="$access_key" SECRET_KEY="$secret_key" "$bin_dir/python" -c '
import json, os
print(json.dumps({"identities": [{
    "name": "local-stack",
    "credentials": [{"accessKey": os.environ["ACCESS_KEY"], "secretKey": os.environ["SECRET_KEY"]}],
    "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))' > "$work_dir/identities.json")
}

start_weed() {
    local ports master volume filer admin master_grpc volume_grpc filer_grpc admin_grpc s3_grpc
    ports="$(pick_weed_ports)" || die "no ports to start on"
    read -r master volume filer admin master_grpc volume_grpc filer_grpc admin_grpc s3_grpc <<<"$ports"
    echo "$ports" > "$weed_ports_file"
    mkdir -p "$work_dir/s3" "$work_dir/weed-logs"
    # setsid: the server and anything it spawns form one process group that stop can end.
    # The filer and S3 sockets go to the work folder; the gRPC ones weed always puts in /tmp.
    (cd "$work_dir" && TMPDIR="$work_dir" exec setsid "$bin_dir/weed" -logdir="$work_dir/weed-logs" mini \
        -dir="$work_dir/s3" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
        -master.port="$master" -volume.port="$volume" -filer.port="$filer" -admin.port="$admin" \
        -s3.port="$s3_port" -master.port.grpc="$master_grpc" -volume.port.grpc="$volume_grpc" \
        -filer.port.grpc="$filer_grpc" -admin.port.grpc="$admin_grpc" -s3.port.grpc="$s3_grpc" \
        -s3.config="$work_dir/identities.json" -bucket="$buckets" \
        -filer.localSocket="$work_dir/filer.sock" -s3.localSocket="$work_dir/s3.sock" \
        -master.telemetry=false -webdav=false -admin.ui=false -s3.port.iceberg=0 -s3.port.lance=0 \
        >"$work_dir/weed.log" 2>&1 </dev/null) &
    echo $! > "$weed_pid_file"
    wait_for "http://127.0.0.1:$s3_port/" 30 weed "$weed_pid_file"
}

# Job execution (GenAI judges, trace roll-ups) is off: the project uses none of it, and its
# worker pool costs ~1.3 GB and seven processes.
start_mlflow() {
    (cd "$work_dir" && \
        AWS_ACCESS_KEY_ID="$access_key" AWS_SECRET_ACCESS_KEY="$secret_key" AWS_DEFAULT_REGION=us-east-1 \
        MLFLOW_S3_ENDPOINT_URL="http://127.0.0.1:$s3_port" \
        MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false \
        exec setsid "$bin_dir/mlflow" server \
        --backend-store-uri "sqlite:///$work_dir/mlflow.db" \
        --artifacts-destination s3://mlflow/artifacts --serve-artifacts \
        --host 127.0.0.1 --port "$mlflow_port" --workers 1 \
        >"$work_dir/mlflow.log" 2>&1 </dev/null) &
    echo $! > "$mlflow_pid_file"
    wait_for "http://127.0.0.1:$mlflow_port/health" 90 mlflow "$mlflow_pid_file"
}

write_env_file() {
    (umask 077 && cat > "$env_file" <<EOF
export AWS_ENDPOINT_URL=http://127.0.0.1:$s3_port
export MLFLOW_S3_ENDPOINT_URL=http://127.0.0.1:$s3_port
export S3_USE_HTTPS=0
export AWS_DEFAULT_REGION=us-east-1
export AWS_ACCESS_KEY_ID=$access_key
export AWS_SECRET_ACCESS_KEY=$secret_key
export MLFLOW_TRACKING_URI=http://127.0.0.1:$mlflow_port
export MLFLOW_ARTIFACTS_DESTINATION=s3://mlflow/artifacts
export MLFLOW_DISABLE_TELEMETRY=true
EOF
    )
}

signal_group() {  # pid file signal
    is_running "$1" && kill "-$2" -- "-$(cat "$1")" 2>/dev/null || true
}

wait_group() {  # pid file name: wait for the group to exit, killing it after 20 s
    is_running "$1" || { rm -f "$1"; return 0; }
    local pid deadline
    pid="$(cat "$1")"
    deadline=$((SECONDS + 20))
    while kill -0 -- "-$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
    if kill -0 -- "-$pid" 2>/dev/null; then
        echo "local-stack: $2 ignored SIGTERM for 20 s, killing it" >&2
        kill -KILL -- "-$pid" 2>/dev/null || true
        while kill -0 -- "-$pid" 2>/dev/null; do sleep 0.2; done
    fi
    rm -f "$1"
}

cmd_start() {
    [[ -x "$bin_dir/weed" && -x "$bin_dir/mlflow" ]] \
        || die "weed and mlflow not found in $bin_dir: run 'make setup' or set LOCAL_STACK_BIN"
    if is_running "$weed_pid_file" || is_running "$mlflow_pid_file"; then
        cmd_status && { echo "$env_file"; return 0; }
        die "partly running; run '$0 stop' first"
    fi
    mkdir -p "$work_dir"
    ensure_keys
    echo "$s3_port $mlflow_port" > "$state_file"
    # A failed start leaves nothing running behind it.
    trap 'cmd_stop' EXIT
    start_weed
    start_mlflow
    trap - EXIT
    write_env_file
    echo "S3 on http://127.0.0.1:$s3_port (buckets $buckets), MLflow on http://127.0.0.1:$mlflow_port" >&2
    echo "$env_file"
}

cmd_stop() {
    # Both shut down gracefully at once: each takes seconds.
    signal_group "$mlflow_pid_file" TERM
    signal_group "$weed_pid_file" TERM
    wait_group "$mlflow_pid_file" mlflow
    wait_group "$weed_pid_file" weed
    # weed removes its sockets on a clean exit only; they are named after this stack's gRPC ports.
    if [[ -f "$weed_ports_file" ]]; then
        local port
        for port in $(cat "$weed_ports_file"); do
            rm -f /tmp/seaweedfs-*-grpc-"$port".sock
        done
        rm -f "$weed_ports_file"
    fi
    rm -f "$env_file" "$state_file"
}

cmd_status() {
    local healthy=0
    if is_running "$weed_pid_file" && http_answers "http://127.0.0.1:$s3_port/"; then
        echo "s3: running (pid $(cat "$weed_pid_file"), http://127.0.0.1:$s3_port)"
    else
        echo "s3: stopped"; healthy=3
    fi
    if is_running "$mlflow_pid_file" && http_answers "http://127.0.0.1:$mlflow_port/health"; then
        echo "mlflow: running (pid $(cat "$mlflow_pid_file"), http://127.0.0.1:$mlflow_port)"
    else
        echo "mlflow: stopped"; healthy=3
    fi
    return "$healthy"
}

# Every command but a fresh start talks to the ports the stack was started on.
if [[ -f "$state_file" ]] \
    && { [[ "${1:-}" != start ]] || is_running "$weed_pid_file" || is_running "$mlflow_pid_file"; }; then
    read -r s3_port mlflow_port < "$state_file"
fi

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) [[ -f "$env_file" ]] && echo "$env_file" || die "not started" ;;
    *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
