#!/usr/bin/env bash
# The attacks of RELIABILITY.md's "Trust at the edges" against one build, as a hostile
# client tries them; prints what each got. Needs python3 with grpcio and grpcio-tools
# (tests/run.sh makes such a venv in target/test-venv), openssl and curl; root for the
# Unix socket and cgroup2 cases.
# usage: bench/hostile/run.sh [BIN_DIR]   (default target/release)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
bin=$(realpath "${1:-target/release}")
python=${PYTHON:-target/test-venv/bin/python}
here=bench/hostile
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

# Stubs generated from proto/, and a CA, a server certificate and a token.
"$python" -m grpc_tools.protoc -I proto --python_out="$work" --grpc_python_out="$work" \
    proto/streamhandler/v1/streamhandler.proto proto/streamhandler/v1/payloads.proto
export PYTHONPATH=$work
(cd "$work" &&
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key \
        -out ca.pem -days 2 -subj "/CN=hostile CA" &&
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout server.key \
        -out server.csr -subj "/CN=streamd" &&
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem \
        -days 2 -extfile <(echo "subjectAltName=DNS:localhost,IP:127.0.0.1") &&
    head -c 24 /dev/urandom | base64 >token && chmod 600 token) 2>/dev/null

# Starts streamd with ARGS on a fresh data directory; sets pid, data, grpc (host:port)
# and http (port).
start() {
    local log=$work/streamd.log
    data=$(mktemp -d -p "$work")
    "$bin/streamd" --listen 127.0.0.1:0 --data-dir "$data" "$@" >"$log" 2>&1 &
    pid=$!
    for _ in $(seq 50); do grep -q "listening on" "$log" && break; sleep 0.1; done
    grpc=$(grep -o "listening on [^ ]*" "$log" | cut -d' ' -f3)
    http=$(grep -o "dashboard on https\?://[^/]*" "$log" | sed 's/.*://' || true)
}
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; }

echo "== data no client could decode"
start; "$python" $here/poison.py "$grpc"; stop
echo "== 64 backtracking globs over 9,000 topics beside a probe subscriber"
start; "$python" $here/globs.py "$grpc" 20 | grep -v published; stop
echo "== silent TLS connections, then renewed ones, while streamctl list and the page are timed"
start --http 127.0.0.1:0 --tls-cert "$work/server.pem" --tls-key "$work/server.key" \
    --token-file "$work/token"
python3 $here/tls.py "${grpc##*:}" "$http" "$work/ca.pem" "$(cat "$work/token")" "$bin/streamctl" 30
echo "== routes without the token; guessing it"
for path in images/images/bee.png images/nobody/bee.png metrics no/such/path ""; do
    echo "/$path: $(curl -s --cacert "$work/ca.pem" -o /dev/null -w '%{http_code}' "https://localhost:$http/$path")"
done
python3 $here/guess.py "localhost:$http" "$work/ca.pem"; stop
echo "== twelve stalled subscribers, then gone"
start; "$python" $here/memory.py "$grpc" "$pid"; stop
echo "== a gRPC-Web body a byte a second"
start --http 127.0.0.1:0; python3 $here/trickle.py "127.0.0.1:$http"; stop
echo "== interval=1ns; a second daemon on this one's database"
start
"$python" -c "
import grpc, sys
from streamhandler.v1 import streamhandler_pb2 as pb, streamhandler_pb2_grpc as rpc
from google.protobuf import duration_pb2
try:
    rpc.StreamHandlerStub(grpc.insecure_channel(sys.argv[1])).StartService(pb.StartServiceRequest(name='streamer', interval=duration_pb2.Duration(nanos=1)))
    print('interval=1ns: started')
except grpc.RpcError as e:
    print('interval=1ns:', e.code().name, e.details())
" "$grpc"
timeout 10 "$bin/streamd" --listen 127.0.0.1:0 --data-dir "$(mktemp -d -p "$work")" \
    --database-url "sqlite://$data/streamd.db" 2>&1 | tail -1 || true
stop
if [[ $EUID == 0 ]]; then
    echo "== a socket directory owned by nobody; a reader on a cgroup2 mount"
    mkdir "$work/theirs" && chown nobody "$work/theirs"
    timeout 10 "$bin/streamd" --listen "unix:$work/theirs/s.sock" \
        --data-dir "$(mktemp -d -p "$work")" 2>&1 | tail -1 || true
    mkdir "$work/cgroup" && mount -t cgroup2 none "$work/cgroup"
    printf '[services.cg]\nkind = "reader"\ninterval = "1s"\nparams = { dir = "%s" }\n' \
        "$work/cgroup" >"$work/cg.toml"
    start --config "$work/cg.toml"
    STREAMD_ADDR=$grpc "$bin/streamctl" start cg || true
    stop; umount "$work/cgroup"
fi
