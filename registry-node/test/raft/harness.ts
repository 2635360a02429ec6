// The interaction environment behind testdata/*.txt (after etcd raft's
// rafttest/interaction_env): a handful of nodes driven step by step, with every
// message, role change and read state printed, so that a scenario reads like the paper.

import {
  type ConfChange,
  ConfChangeType,
  decodeConfChange,
  type Entry,
  EntryType,
  MemoryStorage,
  type Message,
  MessageType,
  NONE,
  RawNode,
  StateType,
  Xoshiro128,
} from "../../src/raft/index.js";
import type { Command } from "./datadriven.js";

const decoder = new TextDecoder();
const encoder = new TextEncoder();

type HNode = {
  id: number;
  storage: MemoryStorage;
  raw: RawNode;
  applied: Entry[];
  cs: { voters: number[]; learners: number[] };
  opts: NodeOpts;
};

type NodeOpts = {
  preVote: boolean;
  checkQuorum: boolean;
  electionTimeoutTicks: number;
  maxSizePerMsgBytes: number;
};

export function formatEntry(e: Entry): string {
  if (e.type === EntryType.ConfChange) {
    const cc = decodeConfChange(e.data);
    return `${e.term}/${e.index} ${ConfChangeType[cc.type]} ${cc.nodeId}`;
  }
  return e.data.length === 0 ? `${e.term}/${e.index}` : `${e.term}/${e.index} "${decoder.decode(e.data)}"`;
}

export function formatMessage(m: Message): string {
  let s = `${m.from}->${m.to} ${MessageType[m.type]} Term:${m.term}`;
  if (m.type === MessageType.MsgApp || m.type === MessageType.MsgVote || m.type === MessageType.MsgPreVote) {
    s += ` Log:${m.logTerm}/${m.index}`;
  } else if (m.index !== 0 || m.type === MessageType.MsgAppResp) {
    s += ` Index:${m.index}`;
  }
  if (m.type === MessageType.MsgApp || m.type === MessageType.MsgHeartbeat) s += ` Commit:${m.commit}`;
  if (m.reject && m.type === MessageType.MsgAppResp) {
    s += ` Rejected (Hint: ${m.rejectHint}${m.logTerm ? `, LogTerm: ${m.logTerm}` : ""})`;
  } else if (m.reject) {
    s += " Rejected";
  }
  if (m.entries.length > 0) s += ` Entries:[${m.entries.map(formatEntry).join(", ")}]`;
  if (m.context.length > 0) s += ` Context:${decoder.decode(m.context)}`;
  if (m.snapshot)
    s += ` Snapshot: Index:${m.snapshot.metadata.index} Term:${m.snapshot.metadata.term} Voters:[${m.snapshot.metadata.confState.voters}] Learners:[${m.snapshot.metadata.confState.learners}]`;
  return s;
}

/** Folds runs of identical lines ("... (x19)") so repeated heartbeats stay readable. */
function collapse(lines: string[]): string[] {
  const out: string[] = [];
  let i = 0;
  while (i < lines.length) {
    let j = i + 1;
    while (j < lines.length && lines[j] === lines[i]) j++;
    out.push(j - i > 1 ? `${lines[i]} (x${j - i})` : lines[i]!);
    i = j;
  }
  return out;
}

export class Env {
  nodes = new Map<number, HNode>();
  /** Messages waiting for delivery, per recipient, in send order. */
  mailbox = new Map<number, Message[]>();
  group = new Map<number, number>();
  private readonly random = new Xoshiro128(1);

  handle(c: Command): string {
    switch (c.name) {
      case "add-nodes":
        return this.addNodes(c);
      case "set-log":
        return this.setLog(c);
      case "campaign":
        return this.errOrEmpty(this.node(c.args[0]).raw.campaign());
      case "propose":
        return this.errOrEmpty(this.node(c.args[0]).raw.propose(encoder.encode(c.args[1] ?? "")));
      case "propose-conf-change":
        return this.proposeConfChange(c);
      case "read-index":
        return this.errOrEmpty(this.node(c.args[0]).raw.readIndex(encoder.encode(c.args[1] ?? "ctx")));
      case "transfer-leadership":
        return this.errOrEmpty(this.node(c.args[0]).raw.transferLeadership(Number(c.args[1])));
      case "tick": {
        const n = this.node(c.args[0]);
        const count = Number(c.args[1] ?? 1);
        for (let i = 0; i < count; i++) n.raw.tick();
        return "";
      }
      case "tick-election": {
        // Enough ticks for any randomized election timeout to expire.
        const n = this.node(c.args[0]);
        for (let i = 0; i < n.raw.raft.randomizedElectionTimeoutTicks; i++) n.raw.tick();
        return "";
      }
      case "process-ready":
        return this.ids(c)
          .map((id) => this.processReady(this.node(id)))
          .filter((s) => s)
          .join("\n");
      case "deliver-msgs":
        return this.ids(c)
          .map((id) => this.deliver(id, c.kv.get("drop") === "true"))
          .filter((s) => s)
          .join("\n");
      case "stabilize":
        return this.stabilize(this.ids(c));
      case "partition":
        return this.partition(c.args);
      case "heal":
        this.group = new Map();
        return "";
      case "status":
        return this.ids(c)
          .map((id) => this.status(this.node(id)))
          .join("\n");
      case "raft-log":
        return this.ids(c)
          .map((id) => this.raftLog(this.node(id)))
          .join("\n");
      case "compact":
        return this.compact(this.node(c.args[0]), Number(c.args[1]));
      case "report-unreachable":
        this.node(c.args[0]).raw.reportUnreachable(Number(c.args[1]));
        return "";
      default:
        throw new Error(`${c.pos}: unknown command ${c.name}`);
    }
  }

  private errOrEmpty(err: Error | undefined): string {
    return err ? `error: ${err.message}` : "";
  }

  private node(arg: string | number | undefined): HNode {
    const n = this.nodes.get(Number(arg));
    if (!n) throw new Error(`no node ${arg}`);
    return n;
  }

  private ids(c: Command): number[] {
    return c.args.length > 0 ? c.args.map(Number) : [...this.nodes.keys()].sort((a, b) => a - b);
  }

  private list(s: string | undefined): number[] {
    if (!s) return [];
    return s.replace(/[()]/g, "").split(",").filter(Boolean).map(Number);
  }

  /** add-nodes N [voters=(1,2,3)] [learners=(4)] [index=1] [prevote=true] [checkquorum=true] [maxsize=1] */
  private addNodes(c: Command): string {
    const count = Number(c.args[0]);
    const first = this.nodes.size + 1;
    const voters = c.kv.has("voters") ? this.list(c.kv.get("voters")) : [];
    const learners = this.list(c.kv.get("learners"));
    const index = Number(c.kv.get("index") ?? 0);
    const opts: NodeOpts = {
      preVote: c.kv.get("prevote") === "true",
      checkQuorum: c.kv.get("checkquorum") === "true",
      electionTimeoutTicks: Number(c.kv.get("election") ?? 10),
      maxSizePerMsgBytes: Number(c.kv.get("maxsize") ?? 1024 * 1024),
    };
    const out: string[] = [];
    for (let id = first; id < first + count; id++) {
      const storage = new MemoryStorage({
        data: encoder.encode(""),
        metadata: { index, term: index > 0 ? 1 : 0, confState: { voters, learners } },
      });
      if (index > 0) storage.setHardState({ term: 1, vote: NONE, commit: index });
      const n: HNode = {
        id,
        storage,
        raw: this.newRaw(id, storage, opts),
        applied: [],
        cs: { voters, learners },
        opts,
      };
      this.nodes.set(id, n);
      out.push(`${id}: voters=(${voters}) learners=(${learners}) index=${index}`);
    }
    return out.join("\n");
  }

  private newRaw(id: number, storage: MemoryStorage, o: NodeOpts): RawNode {
    return new RawNode({
      id,
      storage,
      random: this.random,
      electionTimeoutTicks: o.electionTimeoutTicks,
      heartbeatIntervalTicks: 1,
      preVote: o.preVote,
      checkQuorum: o.checkQuorum,
      maxSizePerMsgBytes: o.maxSizePerMsgBytes,
    });
  }

  /** set-log ID term... [term=T]: replaces the node's persisted log (from index 1) and restarts it. */
  private setLog(c: Command): string {
    const n = this.node(c.args[0]);
    const terms = c.args.slice(1).map(Number);
    const storage = new MemoryStorage(n.storage.snapshot());
    storage.append(
      terms.map((term, i) => ({ term, index: i + 1, type: EntryType.Normal, data: new Uint8Array(0) })),
    );
    const term = Number(c.kv.get("term") ?? Math.max(0, ...terms));
    storage.setHardState({ term, vote: NONE, commit: Number(c.kv.get("commit") ?? 0) });
    n.storage = storage;
    n.raw = this.newRaw(n.id, storage, n.opts);
    return "";
  }

  private proposeConfChange(c: Command): string {
    const n = this.node(c.args[0]);
    const types: Record<string, ConfChangeType> = {
      add: ConfChangeType.AddNode,
      "add-learner": ConfChangeType.AddLearnerNode,
      remove: ConfChangeType.RemoveNode,
    };
    const type = types[c.args[1] ?? ""];
    if (type === undefined) throw new Error(`${c.pos}: unknown conf change ${c.args[1]}`);
    const cc: ConfChange = { type, nodeId: Number(c.args[2]) };
    // A node that joins is created empty, as a new server would be.
    if (!this.nodes.has(cc.nodeId)) {
      const storage = new MemoryStorage();
      this.nodes.set(cc.nodeId, {
        id: cc.nodeId,
        storage,
        raw: this.newRaw(cc.nodeId, storage, n.opts),
        applied: [],
        cs: { voters: [], learners: [] },
        opts: n.opts,
      });
    }
    return this.errOrEmpty(n.raw.proposeConfChange(cc));
  }

  private processReady(n: HNode): string {
    if (!n.raw.hasReady()) return "";
    const rd = n.raw.ready();
    const out: string[] = [];
    if (rd.softState)
      out.push(`${n.id}: became ${rd.softState.raftState} term=${n.raw.raft.term} lead=${rd.softState.lead}`);
    if (rd.snapshot) {
      n.storage.applySnapshot(rd.snapshot);
      n.cs = rd.snapshot.metadata.confState;
      out.push(
        `${n.id}: installed snapshot index=${rd.snapshot.metadata.index} term=${rd.snapshot.metadata.term}`,
      );
    }
    n.storage.append(rd.entries);
    if (rd.hardState) n.storage.setHardState(rd.hardState);
    for (const m of rd.messages) {
      const box = this.mailbox.get(m.to) ?? [];
      box.push(m);
      this.mailbox.set(m.to, box);
    }
    for (const e of rd.committed) {
      if (e.type === EntryType.ConfChange) {
        const cc = decodeConfChange(e.data);
        n.cs = n.raw.applyConfChange(cc);
        out.push(`${n.id}: applied ${formatEntry(e)} -> voters=(${n.cs.voters}) learners=(${n.cs.learners})`);
      }
      n.applied.push(e);
    }
    for (const rs of rd.readStates)
      out.push(`${n.id}: read-state index=${rs.index} ctx=${decoder.decode(rs.requestCtx)}`);
    n.raw.advance(rd);
    return out.join("\n");
  }

  private canTalk(a: number, b: number): boolean {
    return (this.group.get(a) ?? 0) === (this.group.get(b) ?? 0);
  }

  private deliver(id: number, drop: boolean): string {
    const box = this.mailbox.get(id) ?? [];
    this.mailbox.set(id, []);
    const out: string[] = [];
    for (const m of box) {
      const to = this.nodes.get(m.to);
      if (drop || !to || !this.canTalk(m.from, m.to)) {
        out.push(`${formatMessage(m)} DROPPED`);
        if (m.type === MessageType.MsgSnap) this.nodes.get(m.from)?.raw.reportSnapshot(m.to, false);
        continue;
      }
      out.push(formatMessage(m));
      to.raw.step(m);
      if (m.type === MessageType.MsgSnap) this.nodes.get(m.from)?.raw.reportSnapshot(m.to, true);
    }
    return collapse(out).join("\n");
  }

  private stabilize(ids: number[]): string {
    const out: string[] = [];
    for (let round = 0; round < 1000; round++) {
      let any = false;
      for (const id of ids) {
        const s = this.processReady(this.node(id));
        if (s) out.push(s);
      }
      for (const id of ids) {
        if ((this.mailbox.get(id) ?? []).length > 0) {
          any = true;
          const s = this.deliver(id, false);
          if (s) out.push(s);
        }
      }
      if (!any && ids.every((id) => !this.node(id).raw.hasReady())) return out.join("\n");
    }
    throw new Error("stabilize did not converge");
  }

  private partition(args: string[]): string {
    this.group = new Map();
    let g = 0;
    for (const a of args) {
      if (a === "|") g++;
      else this.group.set(Number(a), g);
    }
    return "";
  }

  private status(n: HNode): string {
    const r = n.raw.raft;
    return `${n.id}: ${r.state} term=${r.term} vote=${r.vote} lead=${r.lead} commit=${r.raftLog.committed} applied=${r.raftLog.applied} last=${r.raftLog.lastIndex()}`;
  }

  private raftLog(n: HNode): string {
    const r = n.raw.raft;
    const ents = r.raftLog.allEntries();
    return `${n.id}: first=${r.raftLog.firstIndex()} [${ents.map(formatEntry).join(", ")}]`;
  }

  private compact(n: HNode, index: number): string {
    n.storage.createSnapshot(index, n.cs, encoder.encode(`app@${index}`));
    n.storage.compact(index);
    return "";
  }

  isLeader(id: number): boolean {
    return this.node(id).raw.state === StateType.Leader;
  }
}
