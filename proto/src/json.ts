// etcd's JSON gateway (grpc-gateway with jsonpb, OrigName: true) writes proto
// field names (`range_end`, `create_revision`) but, like every jsonpb
// unmarshaler, reads both those and protoc's lowerCamelCase JSON names
// (`rangeEnd`). Our generated `toJSON` writes the proto names and `fromJSON`
// reads only them, so a server that accepts JSON from arbitrary clients first
// passes the body through `withProtoFieldNames`:
//
//   const req = etcdserverpb.RangeRequest.fromJSON(withProtoFieldNames("etcdserverpb.RangeRequest", body));
//
// The renaming needs the message type at every level (`raftTerm` is the JSON
// name of ResponseHeader.raft_term but the proto name of StatusResponse.raftTerm),
// so it walks the static table generated from the descriptors (gen/json-names.ts).
import { jsonShapes, type MessageTypeName } from "./gen/json-names.js";

export type { MessageTypeName } from "./gen/json-names.js";

type Shape = {
  readonly renames: Readonly<Record<string, string>>;
  readonly messages: Readonly<Record<string, string>>;
};

function isMessageTypeName(name: string): name is MessageTypeName {
  return Object.hasOwn(jsonShapes, name);
}

function rename(shape: Shape, json: unknown): unknown {
  if (json === null || typeof json !== "object" || Array.isArray(json)) return json;
  const src = json as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(src)) {
    const name = Object.hasOwn(shape.renames, key) ? (shape.renames[key] as string) : key;
    // When a body carries both spellings, the proto name wins, whatever the key order.
    if (name !== key && Object.hasOwn(src, name)) continue;
    const child = Object.hasOwn(shape.messages, name) ? shape.messages[name] : undefined;
    if (child === undefined || !isMessageTypeName(child)) {
      out[name] = value;
    } else {
      const childShape: Shape = jsonShapes[child];
      out[name] = Array.isArray(value) ? value.map((v) => rename(childShape, v)) : rename(childShape, value);
    }
  }
  return out;
}

/**
 * Returns a copy of `json` (a JSON object for message `typeName`) with every
 * lowerCamelCase JSON key renamed to its proto field name, at every depth.
 * Keys already in proto form, unknown keys and values are left as they are.
 */
export function withProtoFieldNames(typeName: MessageTypeName, json: unknown): unknown {
  return rename(jsonShapes[typeName], json);
}
