// The decision of which registry group (primary or standby) a client uses: a pure core in the
// manner of STYLE.md §1. It takes probe outcomes as arguments and returns the new state and, when
// the client must move, the change as a value; it has no timers, sockets or clock. The shell that
// probes and acts on the change is groups.ts. (It sits in etcd/ next to its only shell rather than
// in core/, whose cores are about calls to services, not about the registry connection.)
//
// Rules, with hysteresis so a flapping link does not bounce the client between clusters:
// - A primary probe is bad when no primary endpoint answered it, or when the answer took longer
//   than latencyMsMax. After badProbesToSwitch consecutive bad primary probes the client moves to
//   the standby, but only if the standby answered its own last probe: moving to a dead standby
//   would turn a slow registry into none.
// - While on the standby, after goodProbesToReturn consecutive good primary probes the client
//   returns to the primary (the primary is the group of record; the standby is a fallback).
// - While on the standby, if the standby fails badProbesToSwitch consecutive probes while the
//   primary answers (even slowly), the client returns to the primary: slow beats unreachable.

export type GroupName = "primary" | "standby";

export interface GroupSwitchConfig {
  /** A primary probe answered slower than this counts as bad. */
  readonly latencyMsMax: number;
  /** Consecutive bad probes of the group in use before the client leaves it (N). */
  readonly badProbesToSwitch: number;
  /** Consecutive good primary probes, while on the standby, before the client returns (M). */
  readonly goodProbesToReturn: number;
}

/** One probe of one group: answered (with its latency) or not (every endpoint failed). */
export type ProbeOutcome =
  | { readonly ok: true; readonly latencyMs: number }
  | { readonly ok: false; readonly reason: string };

export interface GroupChange {
  readonly from: GroupName;
  readonly to: GroupName;
  readonly reason: string;
}

export interface GroupState {
  readonly active: GroupName;
  /** Consecutive bad primary probes (failed or slower than latencyMsMax). */
  readonly primaryBad: number;
  /** Consecutive good primary probes. */
  readonly primaryGood: number;
  /** Whether the primary answered its last probe at all (however slowly); undefined before one. */
  readonly primaryAnswered: boolean | undefined;
  /** Consecutive failed standby probes. */
  readonly standbyBad: number;
  /** Whether the standby answered its last probe; undefined before one. */
  readonly standbyAnswered: boolean | undefined;
}

export function initialGroupState(): GroupState {
  return {
    active: "primary",
    primaryBad: 0,
    primaryGood: 0,
    primaryAnswered: undefined,
    standbyBad: 0,
    standbyAnswered: undefined,
  };
}

export function checkGroupSwitchConfig(cfg: GroupSwitchConfig): void {
  if (!(cfg.latencyMsMax > 0)) throw new RangeError(`latencyMsMax must be > 0, got ${cfg.latencyMsMax}`);
  if (!Number.isInteger(cfg.badProbesToSwitch) || cfg.badProbesToSwitch < 1)
    throw new RangeError(`badProbesToSwitch must be an integer >= 1, got ${cfg.badProbesToSwitch}`);
  if (!Number.isInteger(cfg.goodProbesToReturn) || cfg.goodProbesToReturn < 1)
    throw new RangeError(`goodProbesToReturn must be an integer >= 1, got ${cfg.goodProbesToReturn}`);
}

/** Why a primary probe is bad, or undefined when it is good. */
function primaryBadReason(cfg: GroupSwitchConfig, o: ProbeOutcome): string | undefined {
  if (!o.ok) return `primary unreachable: ${o.reason}`;
  if (o.latencyMs > cfg.latencyMsMax)
    return `primary slow: ${Math.round(o.latencyMs)} ms > ${cfg.latencyMsMax} ms`;
  return undefined;
}

/** Feeds one probe outcome of `group`; returns the next state and the move to make, if any. */
export function onProbe(
  s: GroupState,
  cfg: GroupSwitchConfig,
  group: GroupName,
  outcome: ProbeOutcome,
): { state: GroupState; change?: GroupChange } {
  if (group === "standby") {
    const next: GroupState = {
      ...s,
      standbyAnswered: outcome.ok,
      standbyBad: outcome.ok ? 0 : s.standbyBad + 1,
    };
    if (
      next.active === "standby" &&
      next.standbyBad >= cfg.badProbesToSwitch &&
      next.primaryAnswered === true
    ) {
      const why = outcome.ok ? "" : `: ${outcome.reason}`;
      const reason = `standby unreachable${why}; the primary answers`;
      return { state: moved(next, "primary"), change: { from: "standby", to: "primary", reason } };
    }
    return { state: next };
  }
  const bad = primaryBadReason(cfg, outcome);
  const next: GroupState = {
    ...s,
    primaryAnswered: outcome.ok,
    primaryBad: bad === undefined ? 0 : s.primaryBad + 1,
    primaryGood: bad === undefined ? s.primaryGood + 1 : 0,
  };
  if (next.active === "primary" && bad !== undefined && next.primaryBad >= cfg.badProbesToSwitch) {
    if (next.standbyAnswered !== true) return { state: next };
    return { state: moved(next, "standby"), change: { from: "primary", to: "standby", reason: bad } };
  }
  if (next.active === "standby" && bad === undefined && next.primaryGood >= cfg.goodProbesToReturn) {
    const reason = `primary recovered: ${next.primaryGood} probes under ${cfg.latencyMsMax} ms`;
    return { state: moved(next, "primary"), change: { from: "standby", to: "primary", reason } };
  }
  return { state: next };
}

/** The state right after a move: the streaks start again, so the next move needs its own run. */
function moved(s: GroupState, to: GroupName): GroupState {
  return { ...s, active: to, primaryBad: 0, primaryGood: 0, standbyBad: 0 };
}
