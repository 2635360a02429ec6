// Plain TypeScript forms of etcd's raftpb messages (raft.proto). Field names follow
// raftpb in camelCase so that a reader of etcd raft finds the same words here; no
// protobuf is needed because these values never leave the process as-is (the peer
// transport owns the wire encoding).

/** Node ids are positive integers; 0 means "none" (etcd's `None`). */
export const NONE = 0;

export enum EntryType {
  Normal = 0,
  /** A single-server membership change (etcd's ConfChange v1); data is an encoded ConfChange. */
  ConfChange = 1,
}

export type Entry = {
  term: number;
  index: number;
  type: EntryType;
  data: Uint8Array;
};

export enum MessageType {
  MsgHup = 0,
  MsgBeat = 1,
  MsgProp = 2,
  MsgApp = 3,
  MsgAppResp = 4,
  MsgVote = 5,
  MsgVoteResp = 6,
  MsgSnap = 7,
  MsgHeartbeat = 8,
  MsgHeartbeatResp = 9,
  MsgUnreachable = 10,
  MsgSnapStatus = 11,
  MsgCheckQuorum = 12,
  MsgTransferLeader = 13,
  MsgTimeoutNow = 14,
  MsgReadIndex = 15,
  MsgReadIndexResp = 16,
  MsgPreVote = 17,
  MsgPreVoteResp = 18,
}

export type ConfState = {
  voters: number[];
  learners: number[];
};

export type SnapshotMetadata = {
  confState: ConfState;
  index: number;
  term: number;
};

/**
 * A snapshot of the application state at `metadata.index`. `data` is opaque to Raft:
 * the application supplies it (the registry's bbolt file, or a handle the transport
 * streams) and receives it back on the follower that installs it.
 */
export type Snapshot = {
  data: Uint8Array;
  metadata: SnapshotMetadata;
};

export type Message = {
  type: MessageType;
  to: number;
  from: number;
  term: number;
  /** Term of the entry at `index` (MsgApp: the entry before `entries`; votes: last log term). */
  logTerm: number;
  index: number;
  entries: Entry[];
  commit: number;
  snapshot?: Snapshot;
  reject: boolean;
  rejectHint: number;
  context: Uint8Array;
};

export type HardState = {
  term: number;
  vote: number;
  commit: number;
};

export enum ConfChangeType {
  AddNode = 0,
  RemoveNode = 1,
  AddLearnerNode = 3,
}

export type ConfChange = {
  type: ConfChangeType;
  nodeId: number;
  context?: Uint8Array;
};

export enum StateType {
  Follower = "StateFollower",
  Candidate = "StateCandidate",
  Leader = "StateLeader",
  PreCandidate = "StatePreCandidate",
}

export type SoftState = {
  lead: number;
  raftState: StateType;
};

/** The answer to a ReadIndex request: the read is linearizable once `index` is applied. */
export type ReadState = {
  index: number;
  requestCtx: Uint8Array;
};

const emptyBytes = new Uint8Array(0);

export function emptyHardState(): HardState {
  return { term: 0, vote: NONE, commit: 0 };
}

export function isEmptyHardState(hs: HardState): boolean {
  return hs.term === 0 && hs.vote === NONE && hs.commit === 0;
}

export function hardStateEqual(a: HardState, b: HardState): boolean {
  return a.term === b.term && a.vote === b.vote && a.commit === b.commit;
}

export function emptySnapshot(): Snapshot {
  return { data: emptyBytes, metadata: { confState: { voters: [], learners: [] }, index: 0, term: 0 } };
}

export function isEmptySnapshot(s: Snapshot | undefined): boolean {
  return s === undefined || s.metadata.index === 0;
}

/** A message with every field defaulted, so call sites name only what they mean. */
export function message(fields: Partial<Message> & Pick<Message, "type">): Message {
  return {
    to: NONE,
    from: NONE,
    term: 0,
    logTerm: 0,
    index: 0,
    entries: [],
    commit: 0,
    reject: false,
    rejectHint: 0,
    context: emptyBytes,
    ...fields,
  };
}

/** Local messages never cross the network and carry no term (etcd's IsLocalMsg). */
export function isLocalMessage(t: MessageType): boolean {
  return (
    t === MessageType.MsgHup ||
    t === MessageType.MsgBeat ||
    t === MessageType.MsgUnreachable ||
    t === MessageType.MsgSnapStatus ||
    t === MessageType.MsgCheckQuorum
  );
}

export function isResponseMessage(t: MessageType): boolean {
  return (
    t === MessageType.MsgAppResp ||
    t === MessageType.MsgVoteResp ||
    t === MessageType.MsgHeartbeatResp ||
    t === MessageType.MsgUnreachable ||
    t === MessageType.MsgPreVoteResp
  );
}

export function voteResponseType(t: MessageType): MessageType {
  if (t === MessageType.MsgVote) return MessageType.MsgVoteResp;
  if (t === MessageType.MsgPreVote) return MessageType.MsgPreVoteResp;
  throw new Error(`not a vote message: ${MessageType[t]}`);
}

/** Encodes a ConfChange into entry data: a fixed 9-byte header then the context bytes. */
export function encodeConfChange(cc: ConfChange): Uint8Array {
  const ctx = cc.context ?? emptyBytes;
  const out = new Uint8Array(9 + ctx.length);
  const view = new DataView(out.buffer);
  view.setUint8(0, cc.type);
  view.setFloat64(1, cc.nodeId);
  out.set(ctx, 9);
  return out;
}

export function decodeConfChange(data: Uint8Array): ConfChange {
  if (data.length < 9) throw new Error(`conf change data too short: ${data.length} bytes`);
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const type = view.getUint8(0) as ConfChangeType;
  const nodeId = view.getFloat64(1);
  return { type, nodeId, context: data.slice(9) };
}

/** Bytes counted against the per-message and per-ready limits (etcd counts Entry.Size()). */
export function entrySizeBytes(e: Entry): number {
  return e.data.length + 16;
}
