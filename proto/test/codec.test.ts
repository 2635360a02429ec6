// Encode/decode of a few etcd messages against bytes worked out by hand from
// the protobuf encoding rules (tag = field_number << 3 | wire_type; varints
// little-endian base 128; negative int64 as ten-byte two's complement).
import { describe, expect, it } from "vitest";
import { etcdserverpb, mvccpb, withProtoFieldNames } from "../src/index.js";

const { Compare, Compare_CompareResult, Compare_CompareTarget } = etcdserverpb;

function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes)
    .toString("hex")
    .replace(/(..)(?!$)/g, "$1 ");
}

function encodeHex<T>(fns: { encode(m: T): { finish(): Uint8Array } }, m: T): string {
  return hex(fns.encode(m).finish());
}

describe("binary encoding matches the protobuf wire format", () => {
  it("RangeRequest{key: 'foo'} is 0a 03 66 6f 6f", () => {
    const req = etcdserverpb.RangeRequest.create({ key: Buffer.from("foo") });
    expect(encodeHex(etcdserverpb.RangeRequest, req)).toBe("0a 03 66 6f 6f");
    const back = etcdserverpb.RangeRequest.decode(Buffer.from("0a03666f6f", "hex"));
    expect(back.key.toString()).toBe("foo");
    expect(back.rangeEnd.length).toBe(0);
    expect(back.limit).toBe(0n);
  });

  it("a negative int64 takes ten bytes (RangeRequest.revision = -1)", () => {
    const req = etcdserverpb.RangeRequest.create({ revision: -1n });
    expect(encodeHex(etcdserverpb.RangeRequest, req)).toBe("20 ff ff ff ff ff ff ff ff ff 01");
    expect(etcdserverpb.RangeRequest.decode(Buffer.from("20ffffffffffffffffff01", "hex")).revision).toBe(-1n);
  });

  it("a lease id above 2^53 survives encode and decode exactly", () => {
    // 0x694d9c6a1a8c3e0f: a typical random etcd lease id, far above 2^53.
    const id = 0x694d9c6a1a8c3e0fn;
    expect(id > 2n ** 53n).toBe(true);
    const bytes = etcdserverpb.LeaseGrantResponse.encode({ ID: id, TTL: 10n, error: "" }).finish();
    // field 2 varint: 0x10, then 63 bits in 9 groups of 7; field 3 varint: 0x18 0x0a.
    expect(hex(bytes)).toBe("10 8f fc b0 d4 a1 8d e7 a6 69 18 0a");
    expect(etcdserverpb.LeaseGrantResponse.decode(bytes).ID).toBe(id);
  });

  it("a oneof scalar is written even when it holds the default value", () => {
    // Compare{result: EQUAL, target: VERSION, key: "k", version: 0} asks "does k not exist?";
    // dropping version=0 would change the meaning, so the oneof field must be on the wire.
    const cmp = Compare.create({
      result: Compare_CompareResult.EQUAL,
      target: Compare_CompareTarget.VERSION,
      key: Buffer.from("k"),
      version: 0n,
    });
    expect(encodeHex(Compare, cmp)).toBe("1a 01 6b 20 00");
    const back = Compare.decode(Compare.encode(cmp).finish());
    expect(back.version).toBe(0n);
    expect(back.modRevision).toBeUndefined();
  });

  it("Compare with enums, a oneof and range_end (field 64, two-byte tag)", () => {
    const cmp = Compare.create({
      result: Compare_CompareResult.GREATER,
      target: Compare_CompareTarget.MOD,
      key: Buffer.from("k"),
      modRevision: 5n,
      rangeEnd: Buffer.from("l"),
    });
    // 64 << 3 | 2 = 514 = varint 82 04.
    expect(encodeHex(Compare, cmp)).toBe("08 01 10 02 1a 01 6b 30 05 82 04 01 6c");
  });

  it("repeated enums are packed (WatchCreateRequest.filters)", () => {
    const req = etcdserverpb.WatchRequest.create({
      createRequest: {
        key: Buffer.from("a"),
        filters: [
          etcdserverpb.WatchCreateRequest_FilterType.NOPUT,
          etcdserverpb.WatchCreateRequest_FilterType.NODELETE,
        ],
      },
    });
    // WatchRequest.create_request (1, len 7) { key (1) "a", filters (5) packed [0, 1] }
    expect(encodeHex(etcdserverpb.WatchRequest, req)).toBe("0a 07 0a 01 61 2a 02 00 01");
    const back = etcdserverpb.WatchRequest.decode(etcdserverpb.WatchRequest.encode(req).finish());
    expect(back.createRequest?.filters).toEqual([0, 1]);
  });

  it("a nested message: Event{type: DELETE, kv: {key: 'x', mod_revision: 300}}", () => {
    const ev = mvccpb.Event.create({
      type: mvccpb.Event_EventType.DELETE,
      kv: { key: Buffer.from("x"), modRevision: 300n },
    });
    // kv: field 2 len 6 { key "x" = 0a 01 78, mod_revision (3) 300 = 18 ac 02 }
    expect(encodeHex(mvccpb.Event, ev)).toBe("08 01 12 06 0a 01 78 18 ac 02");
  });
});

describe("JSON follows etcd's gateway format", () => {
  it("uses proto field names, base64 bytes, int64 as strings, enum names; omits defaults", () => {
    const req = etcdserverpb.RangeRequest.create({
      key: Buffer.from("foo"),
      rangeEnd: Buffer.from([0]),
      limit: 10n,
      sortOrder: etcdserverpb.RangeRequest_SortOrder.DESCEND,
      keysOnly: true,
    });
    expect(etcdserverpb.RangeRequest.toJSON(req)).toEqual({
      key: "Zm9v",
      range_end: "AA==",
      limit: "10",
      sort_order: "DESCEND",
      keys_only: true,
    });
  });

  it("keeps non-snake names as written in the protos (ID, TTL, peerURLs)", () => {
    expect(etcdserverpb.LeaseGrantRequest.toJSON({ ID: 0x694d9c6a1a8c3e0fn, TTL: 5n })).toEqual({
      ID: "7587892926715018767",
      TTL: "5",
    });
    expect(
      etcdserverpb.Member.toJSON(etcdserverpb.Member.create({ ID: 1n, peerURLs: ["http://a"] })),
    ).toEqual({
      ID: "1",
      peerURLs: ["http://a"],
    });
  });

  it("fromJSON reads what the gateway writes, including numbers given as JSON numbers", () => {
    const res = etcdserverpb.RangeResponse.fromJSON({
      header: {
        cluster_id: "14841639068965178418",
        member_id: "10276657743932975437",
        revision: "7",
        raft_term: "2",
      },
      kvs: [{ key: "Zm9v", create_revision: "5", mod_revision: "7", version: "3", value: "YmFy" }],
      count: "1",
    });
    expect(res.header?.clusterId).toBe(14841639068965178418n);
    expect(res.kvs[0]?.value.toString()).toBe("bar");
    expect(res.kvs[0]?.createRevision).toBe(5n);
    expect(res.kvs[0]?.lease).toBe(0n);
    expect(etcdserverpb.RangeRequest.fromJSON({ limit: 3 }).limit).toBe(3n);
  });
});

describe("withProtoFieldNames: camelCase JSON input, as the gateway also accepts it", () => {
  it("renames lowerCamelCase keys to proto names and leaves the rest", () => {
    const body = { key: "YQ==", rangeEnd: "Yw==", countOnly: true, sortOrder: "DESCEND", unknownKey: 1 };
    expect(withProtoFieldNames("etcdserverpb.RangeRequest", body)).toEqual({
      key: "YQ==",
      range_end: "Yw==",
      count_only: true,
      sort_order: "DESCEND",
      unknownKey: 1,
    });
    const req = etcdserverpb.RangeRequest.fromJSON(withProtoFieldNames("etcdserverpb.RangeRequest", body));
    expect(req.rangeEnd.toString()).toBe("c");
    expect(req.countOnly).toBe(true);
  });

  it("follows the message type at every depth (raftTerm is a JSON name in one message, a proto name in another)", () => {
    const status = { header: { clusterId: "1", raftTerm: "2" }, raftTerm: "3", dbSizeInUse: "4" };
    expect(withProtoFieldNames("etcdserverpb.StatusResponse", status)).toEqual({
      header: { cluster_id: "1", raft_term: "2" },
      raftTerm: "3",
      dbSizeInUse: "4",
    });
    const txn = {
      compare: [{ key: "YQ==", modRevision: "5", rangeEnd: "Yg==" }],
      success: [
        { requestPut: { key: "YQ==", prevKv: true } },
        { requestTxn: { failure: [{ requestDeleteRange: { rangeEnd: "AA==" } }] } },
      ],
    };
    expect(withProtoFieldNames("etcdserverpb.TxnRequest", txn)).toEqual({
      compare: [{ key: "YQ==", mod_revision: "5", range_end: "Yg==" }],
      success: [
        { request_put: { key: "YQ==", prev_kv: true } },
        { request_txn: { failure: [{ request_delete_range: { range_end: "AA==" } }] } },
      ],
    });
    expect(withProtoFieldNames("etcdserverpb.LeaseCheckpoint", { ID: "1", remainingTTL: "9" })).toEqual({
      ID: "1",
      remaining_TTL: "9",
    });
  });

  it("prefers the proto name when a body has both spellings", () => {
    expect(withProtoFieldNames("etcdserverpb.RangeRequest", { rangeEnd: "QQ==", range_end: "Qg==" })).toEqual(
      { range_end: "Qg==" },
    );
    expect(withProtoFieldNames("etcdserverpb.RangeRequest", { range_end: "Qg==", rangeEnd: "QQ==" })).toEqual(
      { range_end: "Qg==" },
    );
  });

  it("passes non-objects through", () => {
    expect(withProtoFieldNames("etcdserverpb.RangeRequest", null)).toBe(null);
    expect(withProtoFieldNames("etcdserverpb.RangeRequest", "x")).toBe("x");
  });
});
