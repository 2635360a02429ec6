// The WAL's and the snapshotter's error catalogue (fastify / undici habit): one class, a
// stable `code` per failure that callers and tests assert on, and for on-disk problems the
// file and byte offset, so an operator can look at the exact spot with a hex dump.
// The etcd name each code corresponds to is given in the comment.

export const WalErrorCode = {
  /** A record is malformed (bad header, length, type, order) in the middle of the log. */
  Corrupt: "WAL_ERR_CORRUPT",
  /** A record's CRC does not match its bytes, in the middle of the log (etcd ErrCRCMismatch). */
  CrcMismatch: "WAL_ERR_CRC_MISMATCH",
  /** No snapshot record in the WAL matches the snapshot we open at (etcd ErrSnapshotNotFound). */
  SnapshotNotFound: "WAL_ERR_SNAPSHOT_NOT_FOUND",
  /** A snapshot record has the index we open at but another term (etcd ErrSnapshotMismatch). */
  SnapshotMismatch: "WAL_ERR_SNAPSHOT_MISMATCH",
  /** Two segments carry different metadata (etcd ErrMetadataConflict). */
  MetadataConflict: "WAL_ERR_METADATA_CONFLICT",
  /** No segment file covers the requested index, or the directory holds none (etcd ErrFileNotFound). */
  FileNotFound: "WAL_ERR_FILE_NOT_FOUND",
  /** Wal.create on a directory that already holds segments. */
  Exists: "WAL_ERR_EXISTS",
  /** Segment sequence numbers are not contiguous (etcd: "wal: file sequence numbers do not increase continuously"). */
  Sequence: "WAL_ERR_SEQUENCE",
  /** An entry leaves a hole after the entries before it (etcd ErrSliceOutOfRange). */
  IndexGap: "WAL_ERR_INDEX_GAP",
  /** A record larger than recordBytesMax (etcd ErrMaxWALEntrySizeLimitExceeded). */
  RecordTooLarge: "WAL_ERR_RECORD_TOO_LARGE",
  /** The API was used out of order: save before readAll, after close, readAll twice. */
  State: "WAL_ERR_STATE",
  /** An fsync or write failed earlier; the WAL refuses further work (fsync errors are not retryable). */
  Failed: "WAL_ERR_FAILED",
  /** The caller broke an invariant (index continuity, term monotonicity): a bug upstream. */
  Assertion: "WAL_ERR_ASSERTION",
  /** A snapshot file has a bad CRC, magic or layout (etcd snap ErrCRCMismatch / ErrEmptySnapshot). */
  SnapCorrupt: "WAL_ERR_SNAP_CORRUPT",
  /** No valid snapshot file matches (etcd snap ErrNoSnapshot). */
  NoSnapshot: "WAL_ERR_NO_SNAPSHOT",
} as const;

export type WalErrorCode = (typeof WalErrorCode)[keyof typeof WalErrorCode];

export class WalError extends Error {
  override name = "WalError";
  readonly code: WalErrorCode;
  /** The file the problem is in, when it is about a file. */
  readonly path: string | undefined;
  /** Byte offset in `path` of the record that is wrong. */
  readonly offsetBytes: number | undefined;

  constructor(code: WalErrorCode, message: string, where?: { path: string; offsetBytes?: number }) {
    const at =
      where === undefined
        ? ""
        : ` (${where.path}${where.offsetBytes === undefined ? "" : ` at offset ${where.offsetBytes}`})`;
    super(`${code}: ${message}${at}`);
    this.code = code;
    this.path = where?.path;
    this.offsetBytes = where?.offsetBytes;
  }
}

/** An invariant check: a failure is a bug in the caller or in this code, never bad disk data. */
export function assert(condition: boolean, message: string | (() => string)): asserts condition {
  if (!condition)
    throw new WalError(WalErrorCode.Assertion, typeof message === "string" ? message : message());
}
