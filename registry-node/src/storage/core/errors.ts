// One class per failure, each with a stable `code` (STYLE.md §4). The message is bbolt's
// error text (errors.go) where bbolt has one, so operators can search for it.

export class StorageError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = "StorageError";
    this.code = code;
  }
}

const def = (code: string, message: string) =>
  class extends StorageError {
    static readonly code = code;
    constructor(detail?: string) {
      super(code, detail ? `${message}: ${detail}` : message);
    }
  };

export const ErrDatabaseNotOpen = def("STORAGE_ERR_DATABASE_NOT_OPEN", "database not open");
export const ErrDatabaseReadOnly = def("STORAGE_ERR_DATABASE_READ_ONLY", "database is in read-only mode");
export const ErrInvalid = def("STORAGE_ERR_INVALID", "invalid database");
export const ErrVersionMismatch = def("STORAGE_ERR_VERSION_MISMATCH", "version mismatch");
export const ErrChecksum = def("STORAGE_ERR_CHECKSUM", "checksum error");
export const ErrInvalidPageSize = def("STORAGE_ERR_INVALID_PAGE_SIZE", "invalid page size");
export const ErrLocked = def("STORAGE_ERR_LOCKED", "database is locked by another process");
export const ErrTxNotWritable = def("STORAGE_ERR_TX_NOT_WRITABLE", "tx not writable");
export const ErrTxClosed = def("STORAGE_ERR_TX_CLOSED", "tx closed");
export const ErrBucketNotFound = def("STORAGE_ERR_BUCKET_NOT_FOUND", "bucket not found");
export const ErrBucketExists = def("STORAGE_ERR_BUCKET_EXISTS", "bucket already exists");
export const ErrBucketNameRequired = def("STORAGE_ERR_BUCKET_NAME_REQUIRED", "bucket name required");
export const ErrKeyRequired = def("STORAGE_ERR_KEY_REQUIRED", "key required");
export const ErrKeyTooLarge = def("STORAGE_ERR_KEY_TOO_LARGE", "key too large");
export const ErrValueTooLarge = def("STORAGE_ERR_VALUE_TOO_LARGE", "value too large");
export const ErrIncompatibleValue = def("STORAGE_ERR_INCOMPATIBLE_VALUE", "incompatible value");
export const ErrCorrupt = def("STORAGE_ERR_CORRUPT", "consistency check failed");
export const ErrFailed = def(
  "STORAGE_ERR_FAILED",
  "database refuses writes after a failed commit; reopen it",
);
