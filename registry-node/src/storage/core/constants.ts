// Every limit and format constant of the storage engine, in one place (STYLE.md §3).
// Values marked "bbolt" are facts of the on-disk format or of bbolt's behaviour
// (go.etcd.io/bbolt page.go, bucket.go, db.go, node.go) and must not change.

/** bbolt db.go `magic`. */
export const MAGIC = 0xed0cdaed;
/** bbolt db.go `version`: the data file format version. */
export const VERSION = 2;
/** Default page size at creation (bbolt uses the OS page size, 4096 on Linux/amd64). */
export const DEFAULT_PAGE_SIZE_BYTES = 4096;
/** Page sizes we accept at creation and on open: powers of two in this range. */
export const MIN_PAGE_SIZE_BYTES = 1024;
export const MAX_PAGE_SIZE_BYTES = 65536;

/** bbolt page.go: sizeof(page) = id u64 + flags u16 + count u16 + overflow u32. */
export const PAGE_HEADER_SIZE = 16;
/** bbolt page.go: branchPageElement {pos u32, ksize u32, pgid u64}. */
export const BRANCH_ELEMENT_SIZE = 16;
/** bbolt page.go: leafPageElement {flags u32, pos u32, ksize u32, vsize u32}. */
export const LEAF_ELEMENT_SIZE = 16;
/** bbolt db.go: sizeof(meta) = 64; the checksum covers the first 56 bytes. */
export const META_SIZE = 64;
export const META_CHECKSUM_OFFSET = 56;
/** bbolt bucket.go: sizeof(bucket) = root u64 + sequence u64. */
export const BUCKET_HEADER_SIZE = 16;

/** bbolt page.go page flags. */
export const BRANCH_PAGE_FLAG = 0x01;
export const LEAF_PAGE_FLAG = 0x02;
export const META_PAGE_FLAG = 0x04;
export const FREELIST_PAGE_FLAG = 0x10;
/** bbolt page.go: leaf element flag of a nested bucket. */
export const BUCKET_LEAF_FLAG = 0x01;

/** bbolt page.go: a page holds at least this many keys before it may split. */
export const MIN_KEYS_PER_PAGE = 2;
/** bbolt bucket.go: the fill percent used to choose split points, and its clamp. */
export const DEFAULT_FILL_PERCENT = 0.5;
export const MIN_FILL_PERCENT = 0.1;
export const MAX_FILL_PERCENT = 1.0;
/** bbolt bucket.go MaxKeySize. */
export const MAX_KEY_SIZE_BYTES = 32768;
/** bbolt bucket.go MaxValueSize. */
export const MAX_VALUE_SIZE_BYTES = 2 ** 31 - 2;
/** bbolt page.go: page.count is a u16; 0xFFFF in a freelist page means "count in the first element". */
export const MAX_PAGE_COUNT = 0xffff;

/**
 * Page ids are JavaScript numbers, not bigints: a page id times the page size is a file
 * offset, and files stay far below 2^53 bytes, so every valid id is exact. Arithmetic on
 * numbers is an order of magnitude faster than on bigints on the hot read path.
 * The u64 all-ones "no freelist" id of bbolt (pgidNoFreelist) maps to this sentinel.
 */
export const PGID_NO_FREELIST = -1;
/** Largest page id we accept from disk: keeps `pgid * pageSize` below 2^53. */
export const MAX_PGID = 2 ** 36;

/** Page cache of the shell: at most this many bytes of pages are kept in memory. */
export const PAGE_CACHE_BYTES_MAX = 256 * 1024 * 1024;
/**
 * Dirty pages of a write transaction are cut from slabs of this size: one allocation per
 * 256 pages. After a commit the page cache holds the written pages (and so the slabs);
 * the slabs of a rolled-back transaction go back to a pool of at most this many bytes.
 */
export const SLAB_BYTES = 1 << 20;
export const SLAB_POOL_BYTES_MAX = 64 * 1024 * 1024;
/** File growth: sizes double from this minimum up to the step, then grow by the step. */
export const GROW_MIN_BYTES = 32 * 1024;
export const GROW_STEP_BYTES = 64 * 1024 * 1024;

/** bbolt db.go DefaultMaxBatchSize / DefaultMaxBatchDelay. */
export const BATCH_SIZE_MAX = 1000;
export const BATCH_DELAY_MS = 10;

/** compactTo: bytes of keys and values copied per transaction (bbolt compact's txMaxSize). */
export const COMPACT_TX_BYTES_MAX = 64 * 1024 * 1024;
