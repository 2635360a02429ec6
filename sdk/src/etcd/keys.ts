// Key helpers. etcd keys are bytes; the SDK accepts strings (UTF-8) or Buffers.

export type Bytes = string | Buffer;

export function toBuffer(b: Bytes): Buffer {
  return typeof b === "string" ? Buffer.from(b, "utf8") : b;
}

/**
 * The range end that selects every key starting with `prefix` (etcd clientv3 GetPrefixRangeEnd):
 * the prefix with its last byte below 0xff incremented and the rest dropped. An all-0xff or empty
 * prefix means "to the end of the keyspace", which etcd spells as the single byte 0x00.
 */
export function prefixEnd(prefix: Bytes): Buffer {
  const p = Buffer.from(toBuffer(prefix));
  for (let i = p.length - 1; i >= 0; i--) {
    if (p[i]! < 0xff) {
      const end = p.subarray(0, i + 1);
      end[i] = p[i]! + 1;
      return end;
    }
  }
  return Buffer.from([0]);
}

/** The smallest key strictly greater than `key`: the key followed by a zero byte. */
export function keyAfter(key: Bytes): Buffer {
  return Buffer.concat([toBuffer(key), Buffer.from([0])]);
}
