"""A streamd client in Python: starts the streamer, subscribes with a glob, publishes
a JSON object and prints what comes back, typed.

    STREAMD_ADDR=127.0.0.1:50051 python client.py

Exits 0 once it has received its own event and a streamer event, 1 after 10 s.
"""

import os
import sys

import grpc
from google.protobuf import duration_pb2, json_format, struct_pb2

from streamhandler.v1 import streamhandler_pb2 as pb
from streamhandler.v1 import streamhandler_pb2_grpc as pb_grpc

TIMEOUT = 10


def to_struct(obj):
    """A plain dict as a google.protobuf.Struct (every number becomes a double)."""
    struct = struct_pb2.Struct()
    struct.update(obj)
    return struct


def from_struct(struct):
    """A Struct back as a plain dict."""
    return json_format.MessageToDict(struct)


def main():
    addr = os.environ.get("STREAMD_ADDR", "127.0.0.1:50051")
    stub = pb_grpc.StreamHandlerStub(grpc.insecure_channel(addr))

    interval = duration_pb2.Duration()
    interval.FromMilliseconds(200)
    stub.StartService(pb.StartServiceRequest(name="streamer", interval=interval), timeout=TIMEOUT)

    events = stub.Subscribe(pb.SubscribeRequest(topics=["streamer", "demo/*"]), timeout=TIMEOUT)
    # The first event says the subscription is live: what is published from now on
    # reaches this stream.
    first = next(events)
    assert first.WhichOneof("payload") == "subscribed", first
    print(f"subscribed to {list(first.subscribed.topics)}")

    sent = {"greeting": "hello from python", "n": 42, "tags": ["a", "b"]}
    reply = stub.Publish(pb.PublishRequest(topic="demo/hello", data=to_struct(sent)), timeout=TIMEOUT)
    print(f"published demo/hello #{reply.seq}")

    got_own, got_points = False, False
    for event in events:
        kind = event.WhichOneof("payload")
        if kind == "points":
            points = sum(len(s.points) for s in event.points.series)
            print(f"{event.topic} #{event.seq}: {len(event.points.series)} series, {points} points")
            got_points = True
        elif kind == "data":
            print(f"{event.topic} #{event.seq}: {from_struct(event.data)}")
            got_own = got_own or event.topic == "demo/hello"
        elif kind == "lifecycle":
            name = pb.Lifecycle.Kind.Name(event.lifecycle.kind)
            print(f"{event.topic} #{event.seq}: {name} {event.lifecycle.message}".rstrip())
        if got_own and got_points:
            events.cancel()
            return 0
    return 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except grpc.RpcError as e:
        print(f"streamd: {e.code().name}: {e.details()}", file=sys.stderr)
        sys.exit(1)
