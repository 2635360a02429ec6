// The `quotes` gRPC API, shared by its server (quotes.ts) and its client (frontend.ts). Messages
// are JSON instead of protobuf, so the example needs no .proto file or code generation: grpc-js
// takes any serialiser. The mesher does not look inside messages, only at the HTTP/2 frames, so
// it routes this exactly as it routes protobuf gRPC.

import grpc from "@grpc/grpc-js";

export interface QuoteRequest {
  sku: string;
}

export interface Quote {
  sku: string;
  /** Price in cents; it drifts a little from call to call. */
  priceCents: number;
  /** The instance that answered. */
  from: string;
  /** The service that called, as the caller's mesher told the instance's mesher. */
  caller: string | null;
}

const json = {
  requestSerialize: (v: unknown) => Buffer.from(JSON.stringify(v)),
  requestDeserialize: (b: Buffer) => JSON.parse(b.toString()),
  responseSerialize: (v: unknown) => Buffer.from(JSON.stringify(v)),
  responseDeserialize: (b: Buffer) => JSON.parse(b.toString()),
};

/** One unary method: `/quotes.Quotes/Get`. */
export const quotesService = {
  Get: { path: "/quotes.Quotes/Get", requestStream: false, responseStream: false, ...json },
} satisfies grpc.ServiceDefinition;

const raw = {
  requestSerialize: (b: Buffer) => b,
  requestDeserialize: (b: Buffer) => b,
  responseSerialize: (b: Buffer) => b,
  responseDeserialize: (b: Buffer) => b,
};

/**
 * The standard `grpc.health.v1.Health/Check`, which the mesher's `--health-check=grpc` calls.
 * Its answer is the protobuf `HealthCheckResponse{status: SERVING}`, written by hand: field 1,
 * varint, value 1.
 */
export const healthService = {
  Check: { path: "/grpc.health.v1.Health/Check", requestStream: false, responseStream: false, ...raw },
} satisfies grpc.ServiceDefinition;
export const SERVING = Buffer.from([0x08, 0x01]);

/**
 * A client of `quotes` through a mesher: the channel connects to the mesher's outbound port and
 * its authority names the service, which is how the mesher learns where the call should go.
 */
export function quotesClient(mesherOutbound: string): grpc.Client {
  return new grpc.Client(mesherOutbound, grpc.credentials.createInsecure(), {
    "grpc.default_authority": "quotes",
  });
}

/** Calls `Get` with a deadline; resolves with the quote or rejects with the grpc-js error. */
export function getQuote(
  client: grpc.Client,
  req: QuoteRequest,
  metadata: grpc.Metadata,
  timeoutMs: number,
): Promise<Quote> {
  return new Promise((resolve, reject) => {
    client.makeUnaryRequest<QuoteRequest, Quote>(
      quotesService.Get.path,
      quotesService.Get.requestSerialize,
      quotesService.Get.responseDeserialize,
      req,
      metadata,
      { deadline: Date.now() + timeoutMs },
      (err, res) => (err !== null || res === undefined ? reject(err) : resolve(res)),
    );
  });
}
