"""Publish data 49 levels deep (under 600 bytes), a NaN and ±Inf, and data at the
limit; a Python subscriber of adv.* (and a new one with last) must see only what decodes.
The poison is encoded by hand: Python's protobuf will not even build it. Usage: poison.py ADDR"""
import sys, grpc, math, struct as st
from google.protobuf import struct_pb2, json_format
# Stubs generated from proto/ (see this folder's run.sh) are on PYTHONPATH.
from streamhandler.v1 import streamhandler_pb2 as pb, streamhandler_pb2_grpc as rpc
ch = grpc.insecure_channel(sys.argv[1])
s = rpc.StreamHandlerStub(ch)
raw = ch.unary_unary("/streamhandler.v1.StreamHandler/Publish", request_serializer=lambda b: b, response_deserializer=lambda b: b)
def varint(n):
    out = b""
    while True:
        b = n & 0x7F; n >>= 7
        if n: out += bytes([b | 0x80])
        else: return out + bytes([b])
def field(tag, payload): return bytes([tag << 3 | 2]) + varint(len(payload)) + payload
def entry(key, value): return field(1, field(1, key.encode()) + field(2, value))
def number(x): return bytes([2 << 3 | 1]) + st.pack("<d", x)
def nested(levels, leaf):
    data = entry("leaf", leaf)
    for _ in range(levels - 1):
        data = entry("a", field(5, data))
    return data
def publish(topic, data): return field(1, topic.encode()) + field(2, data)
events = s.Subscribe(pb.SubscribeRequest(topics=["adv.*"]), timeout=10)
next(events)
for what, data in [("49 levels", nested(49, number(1))), ("21 levels", nested(21, number(1))), ("NaN", nested(1, number(math.nan))), ("+Inf", nested(1, number(math.inf))), ("-Inf", nested(1, number(-math.inf)))]:
    body = publish("adv.x", data)
    try:
        raw(body); print(f"{what} ({len(data)} bytes of data): ACCEPTED")
    except grpc.RpcError as e:
        print(f"{what} ({len(data)} bytes of data): {e.code().name}: {e.details()[:100]}")
raw(publish("adv.x", nested(20, number(1.5))))
e = next(events)
print("subscriber decoded:", e.topic, "#", e.seq, "data as JSON:", str(json_format.MessageToDict(e.data))[:40], "...")
late = s.Subscribe(pb.SubscribeRequest(topics=["adv.*"], last=True), timeout=10)
next(late); e = next(late)
print("a new subscriber with last decoded:", e.topic, "#", e.seq)
