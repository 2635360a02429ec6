// A paged listing at one fixed revision (etcd clientv3's "paging with limit and key > last").
// The first page fixes the revision R; every later page asks for revision R and starts just after
// the last key of the previous page, so the result is one consistent snapshot however large.
// Each page stays under gRPC's 4 MiB message limit; a page that still exceeds it (huge values)
// is asked again with half the limit.

import type { mvccpb } from "@regmesh/proto";
import type { EtcdClient } from "../etcd/client.js";
import { EtcdError, EtcdErrorCode } from "../etcd/errors.js";
import { keyAfter, prefixEnd } from "../etcd/keys.js";
import { LIST_PAGE_KEYS_DEFAULT, LIST_PAGE_KEYS_MIN, LIST_PAGES_MAX } from "../etcd/limits.js";

export interface Listing {
  kvs: mvccpb.KeyValue[];
  /** The revision every page was read at. */
  revision: bigint;
  pages: number;
}

export async function listPrefix(
  client: EtcdClient,
  prefix: string,
  opts: { pageKeys?: number; revision?: bigint } = {},
): Promise<Listing> {
  const end = prefixEnd(prefix);
  let from: Buffer = Buffer.from(prefix, "utf8");
  let revision = opts.revision ?? 0n;
  let limit = opts.pageKeys ?? LIST_PAGE_KEYS_DEFAULT;
  const kvs: mvccpb.KeyValue[] = [];
  for (let pages = 1; pages <= LIST_PAGES_MAX; ) {
    let res: Awaited<ReturnType<EtcdClient["range"]>>;
    try {
      res = await client.range(from, { rangeEnd: end, limit, revision });
    } catch (err) {
      if (
        err instanceof EtcdError &&
        err.code === EtcdErrorCode.RESPONSE_TOO_LARGE &&
        limit > LIST_PAGE_KEYS_MIN
      ) {
        limit = Math.max(LIST_PAGE_KEYS_MIN, Math.floor(limit / 2));
        continue;
      }
      throw err;
    }
    if (revision === 0n) revision = res.header!.revision;
    kvs.push(...res.kvs);
    if (!res.more || res.kvs.length === 0) return { kvs, revision, pages };
    from = keyAfter(res.kvs[res.kvs.length - 1]!.key);
    pages += 1;
  }
  throw new EtcdError(EtcdErrorCode.BAD_REQUEST, `listing ${prefix}: more than ${LIST_PAGES_MAX} pages`);
}
