"""64 backtracking globs over 9,000 topics, 3 Subscribes/s, beside a probe
subscriber of a 200/s topic. Prints the probe's p50/p99/max in ms and the attack's
answers. Usage: globs.py ADDR SECONDS"""
import sys, threading, time, statistics
import grpc
from google.protobuf import struct_pb2
# Stubs generated from proto/ (see this folder's run.sh) are on PYTHONPATH.
from streamhandler.v1 import streamhandler_pb2 as pb, streamhandler_pb2_grpc as rpc

addr, seconds = sys.argv[1], float(sys.argv[2])
def stub():
    return rpc.StreamHandlerStub(grpc.insecure_channel(addr))

setup = stub()
def topics():
    for i in range(9000):
        d = struct_pb2.Struct(); d.update({"n": i})
        yield pb.PublishRequest(topic="a" * 120 + "%08d" % i, data=d)
print("published", setup.PublishStream(topics()).published, flush=True)

glob = lambda stars: "*a*?" * stars + "*b"
alike = [glob(20)] * 64
different = [glob(20 + i % 10) for i in range(64)]
answers = []
stop = time.time() + seconds
def attack():
    s = stub(); n = 0
    while time.time() < stop:
        began = time.time()
        pats = alike if n % 2 == 0 else different
        try:
            it = s.Subscribe(pb.SubscribeRequest(topics=pats), timeout=30)
            next(it); it.cancel(); answers.append(("ok", time.time() - began))
        except grpc.RpcError as e:
            answers.append((e.code().name, time.time() - began))
        n += 1
        time.sleep(max(0, 1/3 - (time.time() - began)))
t = threading.Thread(target=attack); t.start()

probe = stub()
events = probe.Subscribe(pb.SubscribeRequest(topics=["probe"]))
next(events)
waits = []
def read():
    for e in events:
        if e.WhichOneof("payload") == "data":
            waits.append(time.perf_counter_ns() - int(e.data["t"]))
r = threading.Thread(target=read, daemon=True); r.start()
pub = stub()
while time.time() < stop:
    d = struct_pb2.Struct(); d.update({"t": float(time.perf_counter_ns())})
    pub.Publish(pb.PublishRequest(topic="probe", data=d))
    time.sleep(0.005)
t.join(); time.sleep(0.5)
w = sorted(x / 1e6 for x in waits)
print(f"probe: {len(w)} events p50 {w[len(w)//2]:.2f} ms p99 {w[len(w)*99//100]:.2f} ms max {w[-1]:.2f} ms")
kinds = {}
for k, d in answers: kinds.setdefault(k, []).append(d * 1000)
for k, ds in kinds.items():
    print(f"attack {k}: {len(ds)} answered, median {statistics.median(ds):.1f} ms, max {max(ds):.1f} ms")
