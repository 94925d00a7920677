// A streamd client in Node.js: starts the streamer, subscribes with a glob, publishes
// a JSON object and prints what comes back, typed.
//
//   npm ci && STREAMD_ADDR=127.0.0.1:50051 node client.js
//
// Exits 0 once it has received its own event and a streamer event, 1 after 10 s.

const path = require("node:path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const PROTO = path.join(__dirname, "..", "..", "proto");
const definition = protoLoader.loadSync("streamhandler/v1/streamhandler.proto", {
  includeDirs: [PROTO],
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
});
const { StreamHandler } = grpc.loadPackageDefinition(definition).streamhandler.v1;

// A plain JS value as a google.protobuf.Value (every number becomes a double).
function toValue(value) {
  if (value === null || value === undefined) return { nullValue: "NULL_VALUE" };
  if (typeof value === "number") return { numberValue: value };
  if (typeof value === "string") return { stringValue: value };
  if (typeof value === "boolean") return { boolValue: value };
  if (Array.isArray(value)) return { listValue: { values: value.map(toValue) } };
  return { structValue: toStruct(value) };
}

// A plain object as a google.protobuf.Struct.
function toStruct(object) {
  const fields = {};
  for (const [key, value] of Object.entries(object)) fields[key] = toValue(value);
  return { fields };
}

// A google.protobuf.Value back as a plain JS value.
function fromValue(value) {
  switch (value.kind) {
    case "nullValue": return null;
    case "numberValue": return value.numberValue;
    case "stringValue": return value.stringValue;
    case "boolValue": return value.boolValue;
    case "listValue": return value.listValue.values.map(fromValue);
    case "structValue": return fromStruct(value.structValue);
    default: return undefined;
  }
}

// A google.protobuf.Struct back as a plain object.
function fromStruct(struct) {
  const object = {};
  for (const [key, value] of Object.entries(struct.fields)) object[key] = fromValue(value);
  return object;
}

function call(client, method, request) {
  return new Promise((resolve, reject) =>
    client[method](request, { deadline: Date.now() + 10_000 }, (err, reply) =>
      err ? reject(err) : resolve(reply)));
}

async function main() {
  const addr = process.env.STREAMD_ADDR || "127.0.0.1:50051";
  const client = new StreamHandler(addr, grpc.credentials.createInsecure());
  await call(client, "StartService", {
    name: "streamer",
    interval: { seconds: 0, nanos: 200_000_000 },
  });

  const events = client.Subscribe({ topics: ["streamer", "demo/*"] });
  let gotOwn = false;
  let gotPoints = false;
  const timer = setTimeout(() => {
    console.error("timed out");
    process.exit(1);
  }, 10_000);
  events.on("error", (err) => {
    if (err.code === grpc.status.CANCELLED) return;
    console.error(`streamd: ${err.message}`);
    process.exit(1);
  });
  events.on("data", async (event) => {
    switch (event.payload) {
      case "subscribed": {
        // The subscription is live: what is published from now on reaches it.
        console.log(`subscribed to ${JSON.stringify(event.subscribed.topics)}`);
        const sent = { greeting: "hello from node", n: 42, tags: ["a", "b"] };
        const reply = await call(client, "Publish", { topic: "demo/hello", data: toStruct(sent) });
        console.log(`published demo/hello #${reply.seq}`);
        break;
      }
      case "points": {
        const series = event.points.series;
        const points = series.reduce((n, s) => n + s.points.length, 0);
        console.log(`${event.topic} #${event.seq}: ${series.length} series, ${points} points`);
        gotPoints = true;
        break;
      }
      case "data":
        console.log(`${event.topic} #${event.seq}: ${JSON.stringify(fromStruct(event.data))}`);
        gotOwn ||= event.topic === "demo/hello";
        break;
      case "lifecycle":
        console.log(`${event.topic} #${event.seq}: ${event.lifecycle.kind} ${event.lifecycle.message}`.trimEnd());
        break;
    }
    if (gotOwn && gotPoints) {
      clearTimeout(timer);
      events.cancel();
      client.close();
    }
  });
}

main().catch((err) => {
  console.error(`streamd: ${err.message}`);
  process.exit(1);
});
