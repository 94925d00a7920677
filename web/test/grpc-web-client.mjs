// A plain gRPC-Web client from Node, on the same connect-web transport the page uses:
// checks the daemon's translation outside the browser. Usage:
//   node test/grpc-web-client.mjs URL [TOKEN]
// Prints one JSON line per step; exits 1 with the error otherwise.
import { createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { StreamHandler } from "../src/gen/streamhandler/v1/streamhandler_pb.js";

const [url, token] = process.argv.slice(2);
const bearer = (next) => async (request) => {
  if (token) request.header.set("authorization", `Bearer ${token}`);
  return next(request);
};
const client = createClient(
  StreamHandler,
  createGrpcWebTransport({ baseUrl: url, interceptors: [bearer] }),
);
const say = (line) => console.log(JSON.stringify(line));

const listed = await client.listServices({});
say({ listed: listed.services.map((s) => s.name) });

const started = await client.startService({
  name: "streamer",
  interval: { seconds: 0n, nanos: 200_000_000 },
});
say({ started: started.service.name, state: started.service.state });

// A server stream over gRPC-Web: the Subscribed event, then three plots; leaving the
// loop cancels the stream.
let plots = 0;
for await (const event of client.subscribe({ topics: ["streamer"] })) {
  if (event.payload.case === "subscribed") {
    say({ subscribed: event.payload.value.topics });
  } else if (event.payload.case === "points") {
    plots += 1;
    say({ topic: event.topic, seq: Number(event.seq), series: event.payload.value.series.length });
    if (plots === 3) break;
  }
}

const stopped = await client.stopService({ name: "streamer" });
say({ stopped: stopped.wasRunning });
