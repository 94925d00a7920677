"""A Python client of streamd, built on stubs generated from proto/ by grpc_tools.

Run by tests/foreign.rs with the generated stubs on PYTHONPATH:

    client.py ADDR streamer   start streamer, read 3 Points events, stop it
    client.py ADDR publish    publish a Struct to py/hello and receive it back
    client.py ADDR depth N    publish data nested N levels deep and receive it back;
                              data one level deeper, and a NaN, are refused

With STREAMD_TLS_CA set it connects over TLS trusting that CA, and with STREAMD_TOKEN
it sends the token as `authorization: Bearer <token>`.

Prints one JSON line summarising what it saw and exits 0; any failed check raises, so
the exit status is non-zero and the traceback lands on stderr. Every call has a
deadline, so the script ends on its own even when the daemon never answers.
"""

import json
import os
import sys

import grpc
from google.protobuf import duration_pb2, json_format, struct_pb2

from streamhandler.v1 import streamhandler_pb2 as pb
from streamhandler.v1 import streamhandler_pb2_grpc as pb_grpc

# Seconds any one call may take; the whole stream read shares STREAM_DEADLINE.
CALL_DEADLINE = 10
STREAM_DEADLINE = 20


def subscribe(stub, topics):
    """Opens a Subscribe stream and returns it once its first event, Subscribed, says
    it is live: every event published after that reaches it."""
    events = stub.Subscribe(pb.SubscribeRequest(topics=topics), timeout=STREAM_DEADLINE)
    first = next(events)
    assert first.WhichOneof("payload") == "subscribed", f"the stream began with {first}"
    assert list(first.subscribed.topics) == topics, f"subscribed to {first.subscribed}"
    return events


def streamer(stub):
    interval = duration_pb2.Duration()
    interval.FromMilliseconds(200)
    stub.StartService(
        pb.StartServiceRequest(name="streamer", interval=interval), timeout=CALL_DEADLINE
    )

    events = subscribe(stub, ["streamer"])
    seqs, series_counts = [], []
    for event in events:
        assert event.topic == "streamer", f"event from another topic: {event}"
        if event.WhichOneof("payload") != "points":
            continue
        series = event.points.series
        assert len(series) == 10, f"expected 10 series, got {len(series)}"
        for one in series:
            assert one.points, "a series without points"
            for p in one.points:
                assert 0 <= p.x <= 3 and 0 <= p.y <= 6, f"point out of range: {p}"
        seqs.append(event.seq)
        series_counts.append(len(series))
        if len(seqs) == 3:
            break
    # Leave the stream before stopping, so the Stopped event goes nowhere.
    events.cancel()

    stopped = stub.StopService(pb.StopServiceRequest(name="streamer"), timeout=CALL_DEADLINE)
    assert stopped.was_running, f"streamer was not running when stopped: {stopped}"
    return {"points_events": len(seqs), "seqs": seqs, "series": series_counts}


def publish(stub):
    sent = {
        "greeting": "hello from python",
        "n": 42.5,
        "ok": True,
        "nothing": None,
        "list": [1, "two", False],
        "nested": {"depth": 2},
    }
    data = struct_pb2.Struct()
    data.update(sent)

    events = subscribe(stub, ["py/hello"])

    reply = stub.Publish(pb.PublishRequest(topic="py/hello", data=data), timeout=CALL_DEADLINE)
    event = next(events)
    events.cancel()

    assert event.topic == "py/hello", f"event from another topic: {event}"
    assert event.WhichOneof("payload") == "data", f"not a data event: {event}"
    assert event.seq == reply.seq, f"published as seq {reply.seq}, received {event.seq}"
    received = json_format.MessageToDict(event.data)
    assert received == sent, f"sent {sent}, received {received}"
    return {"published_seq": reply.seq, "received_seq": event.seq, "data": received}


def nested(levels):
    """A dict `levels` objects deep, itself the first, with a number at the bottom."""
    data = {"leaf": 1}
    for _ in range(levels - 1):
        data = {"a": data}
    return data


def refusal(stub, data):
    """The INVALID_ARGUMENT message a Publish of `data` gets; anything else raises."""
    request = pb.PublishRequest(topic="py/deep", data=struct_pb2.Struct())
    request.data.update(data)
    try:
        stub.Publish(request, timeout=CALL_DEADLINE)
    except grpc.RpcError as refused:
        assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT, refused
        return refused.details()
    raise AssertionError(f"published: {data}")


def depth(stub, limit):
    events = subscribe(stub, ["py/deep"])
    sent = nested(limit)
    request = pb.PublishRequest(topic="py/deep", data=struct_pb2.Struct())
    request.data.update(sent)
    reply = stub.Publish(request, timeout=CALL_DEADLINE)
    # Decoded by Python's protobuf with its default limits, then read as JSON.
    event = next(events)
    events.cancel()
    assert event.seq == reply.seq, f"published as seq {reply.seq}, received {event.seq}"
    received = json_format.MessageToDict(event.data)
    assert received == sent, f"sent {sent}, received {received}"
    return {
        "received_levels": limit,
        "one_deeper": refusal(stub, nested(limit + 1)),
        "nan": refusal(stub, {"x": float("nan")}),
        "infinity": refusal(stub, {"x": [float("inf")]}),
    }


def channel_to(addr):
    ca, token = os.environ.get("STREAMD_TLS_CA"), os.environ.get("STREAMD_TOKEN")
    if not ca:
        assert not token, "gRPC sends call credentials over TLS only"
        return grpc.insecure_channel(addr)
    with open(ca, "rb") as f:
        credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
    if token:
        credentials = grpc.composite_channel_credentials(
            credentials, grpc.access_token_call_credentials(token)
        )
    return grpc.secure_channel(addr, credentials)


def main():
    addr, mode, args = sys.argv[1], sys.argv[2], [int(a) for a in sys.argv[3:]]
    with channel_to(addr) as channel:
        stub = pb_grpc.StreamHandlerStub(channel)
        summary = {"streamer": streamer, "publish": publish, "depth": depth}[mode](stub, *args)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
