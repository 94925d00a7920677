// Data at the daemon's nesting limit, and one level past it, through Node's grpc-js
// with proto-loader (protobufjs), as examples/node loads them. Run by tests/foreign.rs:
//
//   node tests/node/depth.js ADDR LEVELS
//
// Publishes data LEVELS objects deep and receives it back decoded; data one level
// deeper, and a NaN, must be refused with INVALID_ARGUMENT. Prints one JSON line and
// exits 0; exits 1 with the reason otherwise, within 20 s.
const path = require("node:path");
const modules = path.join(__dirname, "..", "..", "examples", "node", "node_modules");
const grpc = require(path.join(modules, "@grpc/grpc-js"));
const protoLoader = require(path.join(modules, "@grpc/proto-loader"));

const definition = protoLoader.loadSync("streamhandler/v1/streamhandler.proto", {
  includeDirs: [path.join(__dirname, "..", "..", "proto")],
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
});
const { StreamHandler } = grpc.loadPackageDefinition(definition).streamhandler.v1;

const [addr, levelsArg] = process.argv.slice(2);
const levels = Number(levelsArg);
const client = new StreamHandler(addr, grpc.credentials.createInsecure());
setTimeout(() => fail("no answer within 20 s"), 20_000).unref();

function fail(reason) {
  console.error(`depth.js: ${reason}`);
  process.exit(1);
}

// `count` Structs nested, the outermost first, with `bottom` at the end.
function nested(count, bottom) {
  let struct = { fields: { leaf: bottom } };
  for (let i = 1; i < count; i++) struct = { fields: { a: { structValue: struct } } };
  return struct;
}

function depthOf(struct) {
  const inner = struct.fields.a;
  return inner ? 1 + depthOf(inner.structValue) : 1;
}

function publish(data) {
  return new Promise((resolve, reject) =>
    client.Publish({ topic: "node/deep", data }, (error, reply) =>
      error ? reject(error) : resolve(reply),
    ),
  );
}

async function refused(data) {
  try {
    await publish(data);
  } catch (error) {
    if (error.code !== grpc.status.INVALID_ARGUMENT) throw error;
    return error.details;
  }
  throw new Error("published data the daemon should refuse");
}

async function main() {
  const events = client.Subscribe({ topics: ["node/deep"] });
  events.on("error", (error) => {
    if (error.code !== grpc.status.CANCELLED) fail(`the stream failed: ${error.message}`);
  });
  const received = new Promise((resolve) =>
    events.on("data", (event) => {
      if (event.payload === "data") resolve(event);
    }),
  );
  await new Promise((resolve) => events.once("data", resolve)); // Subscribed
  const reply = await publish(nested(levels, { numberValue: 1 }));
  const event = await received;
  events.cancel();
  if (event.seq !== reply.seq) fail(`published as ${reply.seq}, received ${event.seq}`);
  const summary = {
    received_levels: depthOf(event.data),
    one_deeper: await refused(nested(levels + 1, { numberValue: 1 })),
    nan: await refused(nested(1, { numberValue: NaN })),
  };
  console.log(JSON.stringify(summary));
  client.close();
}

main().catch((error) => fail(error.stack ?? String(error)));
