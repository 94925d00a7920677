// Data at the daemon's nesting limit, and one level past it, through the page's own
// client: protobuf-es over gRPC-Web with connect-web. Usage:
//   node test/depth.mjs URL LEVELS
// Publishes data LEVELS objects deep and receives it back, decoded and read as JSON;
// data one level deeper, and a NaN, must be refused with INVALID_ARGUMENT. Prints one
// JSON line; exits 1 with the error otherwise.
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { StreamHandler } from "../src/gen/streamhandler/v1/streamhandler_pb.js";

const [url, levelsArg] = process.argv.slice(2);
const levels = Number(levelsArg);
const client = createClient(StreamHandler, createGrpcWebTransport({ baseUrl: url }));
setTimeout(() => {
  console.error("depth.mjs: no answer within 20 s");
  process.exit(1);
}, 20_000).unref();

// A plain object `count` objects deep, itself the first, with `bottom` at the end.
function nested(count, bottom) {
  let object = { leaf: bottom };
  for (let i = 1; i < count; i++) object = { a: object };
  return object;
}

async function refused(data) {
  try {
    await client.publish({ topic: "es/deep", data });
  } catch (error) {
    const connectError = ConnectError.from(error);
    if (connectError.code !== Code.InvalidArgument) throw error;
    return connectError.rawMessage;
  }
  throw new Error("published data the daemon should refuse");
}

const stream = client.subscribe({ topics: ["es/deep"] })[Symbol.asyncIterator]();
const first = await stream.next();
if (first.value?.payload.case !== "subscribed") throw new Error("the stream began otherwise");
const sent = nested(levels, 1);
const reply = await client.publish({ topic: "es/deep", data: sent });
const { value: event } = await stream.next();
await stream.return?.();
// The Struct's JSON, as protobuf-es reads it from the decoded message.
const received = event.payload.value;
if (JSON.stringify(received) !== JSON.stringify(sent)) {
  throw new Error(`sent ${JSON.stringify(sent)}, received ${JSON.stringify(received)}`);
}
if (event.seq !== reply.seq) throw new Error(`published as ${reply.seq}, received ${event.seq}`);
console.log(
  JSON.stringify({
    received_levels: levels,
    one_deeper: await refused(nested(levels + 1, 1)),
    nan: await refused({ x: NaN }),
  }),
);
