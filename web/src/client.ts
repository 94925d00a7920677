// The daemon's API over gRPC-Web, on the origin that served the page.
import {
  Code,
  ConnectError,
  createClient,
  type Client,
  type Interceptor,
} from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { StreamHandler } from "./gen/streamhandler/v1/streamhandler_pb.js";
import { askForToken, currentToken } from "./token";

export type Api = Client<typeof StreamHandler>;

const bearer: Interceptor = (next) => async (request) => {
  const token = currentToken();
  if (token !== null) request.header.set("authorization", `Bearer ${token}`);
  return next(request);
};

export function createApi(): Api {
  const transport = createGrpcWebTransport({
    baseUrl: location.origin,
    interceptors: [bearer],
  });
  return createClient(StreamHandler, transport);
}

export function isUnauthenticated(error: unknown): boolean {
  return ConnectError.from(error).code === Code.Unauthenticated;
}

/** What went wrong, as the daemon put it, without the transport's code prefix. */
export function errorText(error: unknown): string {
  const connectError = ConnectError.from(error);
  return connectError.rawMessage || Code[connectError.code] || "unknown error";
}

/** Runs `call`, asking for the token and trying again while the daemon refuses it. */
export async function authorized<T>(call: () => Promise<T>): Promise<T> {
  for (;;) {
    try {
      return await call();
    } catch (error) {
      if (!isUnauthenticated(error)) throw error;
      await askForToken(errorText(error));
    }
  }
}
