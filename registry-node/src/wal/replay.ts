// Replaying the records of a WAL into what Raft restarts from (etcd's WAL.ReadAll loop):
// the metadata, the last hard state, and the entries after the snapshot the WAL was opened
// at, with later entries overwriting earlier ones at the same index.

import type { Entry, HardState } from "../raft/types.js";
import { WalError, WalErrorCode } from "./errors.js";
import {
  decodeEntry,
  decodeSnapshotMarker,
  decodeState,
  type Frame,
  RecordType,
  type SnapshotMarker,
} from "./record.js";

export class LogReplay {
  metadata: Uint8Array | undefined;
  state: HardState = { term: 0, vote: 0, commit: 0 };
  /** Entries after the snapshot, conflicts resolved. */
  readonly entries: Entry[] = [];
  /** Whether a snapshot record matching `start` was seen (the zero marker always matches). */
  matched: boolean;
  /** Index of the last entry record read: etcd's enti, the entry the next append follows. */
  lastEntryIndex: number;

  constructor(readonly start: SnapshotMarker) {
    this.matched = start.index === 0;
    this.lastEntryIndex = start.index;
  }

  apply(frame: Frame, path: string): void {
    const where = { path, offsetBytes: frame.offsetBytes };
    const corrupt = (what: string) => new WalError(WalErrorCode.Corrupt, what, where);
    switch (frame.type) {
      case RecordType.Entry: {
        const e = decodeEntry(frame.payload);
        if (!e) throw corrupt("malformed entry record");
        this.entry(e, where);
        return;
      }
      case RecordType.State: {
        const hs = decodeState(frame.payload);
        if (!hs) throw corrupt("malformed state record");
        // The writer asserts both on every save; check again after reading (TigerBeetle habit).
        if (hs.term < this.state.term || hs.commit < this.state.commit) {
          throw corrupt(
            `hard state (term ${hs.term}, commit ${hs.commit}) goes back from ` +
              `(${this.state.term}, ${this.state.commit})`,
          );
        }
        this.state = hs;
        return;
      }
      case RecordType.Metadata:
        if (this.metadata && !bytesEqual(this.metadata, frame.payload)) {
          throw new WalError(
            WalErrorCode.MetadataConflict,
            "metadata differs from an earlier segment's",
            where,
          );
        }
        this.metadata ??= frame.payload.slice();
        return;
      case RecordType.Crc:
        return; // checked with the segment header
      case RecordType.Snapshot: {
        const m = decodeSnapshotMarker(frame.payload);
        if (!m) throw corrupt("malformed snapshot record");
        if (m.index !== this.start.index) return;
        if (m.term !== this.start.term) {
          throw new WalError(
            WalErrorCode.SnapshotMismatch,
            `snapshot record (index ${m.index}, term ${m.term}) does not match term ${this.start.term}`,
            where,
          );
        }
        this.matched = true;
        return;
      }
    }
  }

  private entry(e: Entry, where: { path: string; offsetBytes: number }): void {
    const start = this.start.index;
    const ents = this.entries;
    this.lastEntryIndex = e.index;
    if (e.index <= start) {
      // An entry at or before the snapshot replaces everything after it, so the entries
      // read so far beyond the snapshot are gone too. (etcd's ReadAll skips such an entry and
      // keeps them: stale, and harmless to Raft, which finds the conflict on the next
      // append; dropping them is exact.) It happens when a leader overwrote entry i after a
      // cut and i was committed, and snapshotted, later.
      ents.length = 0;
      return;
    }
    const up = e.index - start - 1;
    if (up > ents.length) {
      throw new WalError(
        WalErrorCode.IndexGap,
        `entry ${e.index} follows entry ${start + ents.length}: entries are missing`,
        where,
      );
    }
    ents.length = up; // etcd: ents = append(ents[:up], e), dropping the overwritten suffix
    const prev = ents[up - 1];
    if (prev && prev.term > e.term) {
      throw new WalError(
        WalErrorCode.Corrupt,
        `entry ${e.index} has term ${e.term}, below term ${prev.term} of entry ${prev.index}`,
        where,
      );
    }
    ents.push(e);
  }
}

export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
