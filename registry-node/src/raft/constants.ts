// Every limit of the Raft core in one place (STYLE.md §3). Units are last in names.

/** Followers that hear nothing for this many ticks (randomised up to 2x) start an election. */
export const electionTimeoutTicksDefault = 10;
/** A leader sends heartbeats this often; must be well below the election timeout (thesis §3.4). */
export const heartbeatIntervalTicksDefault = 1;
/** Most entry bytes in one MsgApp (etcd Config.MaxSizePerMsg). At least one entry is always sent. */
export const maxSizePerMsgBytesDefault = 1024 * 1024;
/** Most MsgApp in flight to one follower in the replicate state (etcd Config.MaxInflightMsgs). */
export const maxInflightMsgsDefault = 256;
/** Most entry bytes in flight to one follower; 0 means bounded by count only (etcd MaxInflightBytes). */
export const maxInflightBytesDefault = 0;
/**
 * Most payload bytes a leader holds appended but not yet committed; proposals beyond it
 * are refused, so a leader cut off from its quorum cannot grow its log without bound
 * (etcd Config.MaxUncommittedEntriesSize).
 */
export const maxUncommittedEntriesSizeBytesDefault = 64 * 1024 * 1024;
/** Most bytes of committed entries handed to the application in one Ready. */
export const maxCommittedSizePerReadyBytesDefault = 16 * 1024 * 1024;
/** Most ReadIndex requests waiting for a heartbeat quorum on a leader (bounded queue). */
export const maxPendingReadIndexRequests = 4096;
/** Most messages buffered between two ready() calls before proposals are refused. */
export const maxMessagesPerReady = 65536;
