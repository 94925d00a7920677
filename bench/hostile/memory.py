"""12 subscribers that stop reading, each of a topic of its own, each given up to its
default 64 MiB; RSS of the daemon before, at the peak, and each 5 s for 30 s after they
go. Usage: memory.py ADDR PID"""
import sys, time, grpc
from google.protobuf import struct_pb2
# Stubs generated from proto/ (see this folder's run.sh) are on PYTHONPATH.
from streamhandler.v1 import streamhandler_pb2 as pb, streamhandler_pb2_grpc as rpc
addr, pid = sys.argv[1], sys.argv[2]
rss = lambda: int(next(l for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS")).split()[1]) // 1024
stalled = []
for i in range(12):
    ch = grpc.insecure_channel(addr, options=[("grpc.max_receive_message_length", 1 << 20)])
    it = rpc.StreamHandlerStub(ch).Subscribe(pb.SubscribeRequest(topics=[f"stall.{i}"]))
    next(it)  # Subscribed; then never read again
    stalled.append((ch, it))
before = rss()
pub = rpc.StreamHandlerStub(grpc.insecure_channel(addr))
d = struct_pb2.Struct(); d.update({"pad": "x" * 1000})
for i in range(12):
    pub.PublishStream(pb.PublishRequest(topic=f"stall.{i}", data=d) for _ in range(70_000))
peak = rss()
for ch, it in stalled:
    it.cancel(); ch.close()
print(f"RSS before {before} MiB, peak {peak} MiB")
for s in range(6):
    time.sleep(5); print(f"  {5*(s+1)} s after they left: {rss()} MiB", flush=True)
