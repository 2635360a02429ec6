// Every limit of the WAL and the snapshot files, in one place (TigerBeetle habit: a limit on
// everything, units last in names). Values follow etcd's wal and snap packages where etcd has
// one; each comment says where it comes from or why it differs.

/**
 * Default segment size. etcd's `SegmentSizeBytes` is 64 MiB (wal/wal.go): a segment is
 * preallocated to this size and the log is cut to a new segment once a save crosses it.
 */
export const segmentSizeBytesDefault = 64 * 1024 * 1024;
/** Smallest segment size accepted (tests use small segments to exercise cuts). */
export const segmentSizeBytesMin = 512;
/**
 * Largest segment size accepted. Frame headers carry a 32-bit durable offset, so a segment
 * (its size plus the one batch that may cross it) must stay below 4 GiB.
 */
export const segmentSizeBytesMax = 1024 * 1024 * 1024;
/** Largest offset a frame may end at inside a segment (the 32-bit durable offset field). */
export const segmentOffsetBytesMax = 0xffff_ffff;

/**
 * Largest payload of one record. etcd bounds a WAL record by `maxWALEntrySizeLimit` (10 MiB,
 * wal/decoder.go); we allow a little more because a Raft entry carries a whole etcd request
 * (1.5 MiB by default, configurable). A frame header claiming more is corruption, not data.
 */
export const recordBytesMax = 64 * 1024 * 1024;

/** Frame header size (see record.ts). */
export const frameHeaderBytes = 16;
/** Frames start and end on this alignment, as etcd's 8-byte aligned frames do. */
export const frameAlignBytes = 8;

/**
 * Snapshot metadata files may carry a small application payload (etcd stores the whole
 * v2 store there; we store only metadata because the bbolt file is the snapshot body).
 */
export const snapDataBytesMax = 16 * 1024 * 1024;
/** Most voters or learners a snapshot's ConfState may list (a sanity bound when decoding). */
export const confStateMembersMax = 1024;
