// Typed events: the SDK's diagnostics channels (channels.ts) as a map from channel name to the
// type of the message published on it, so a subscriber gets its message typed:
//
//   const off = subscribeChannel("sdk:registry:group", (m) => metrics.inc(m.to)); // m: GroupChange
//   off();
//
// Channel names are the stable API (STYLE.md §4); they are not changed here, only described.
// SDK_CHANNEL_FIELDS lists the fields every message of a channel carries; a unit test checks that
// it names exactly the channels in channels.ts and that published messages carry those fields, so
// a new channel or a changed message cannot go undocumented.

import diagnostics from "node:diagnostics_channel";
import type { EjectionEvent } from "../core/ejection.js";
import type { PolicyError } from "../core/policy.js";
import type { GroupChange } from "./group-core.js";

export interface SdkChannelMessages {
  /** The watch stream broke and is being re-opened after `delayMs`. */
  "sdk:watch:reconnect": { endpoint: string; attempt: number; delayMs: number; reason: string };
  /** A watcher's resume revision was compacted; it is closed and its owner re-lists. */
  "sdk:watch:compacted": { watcherId: number; compactRevision: bigint };
  /** A lease was declared lost (deadline passed, revoked, expired, or a registry group switch). */
  "sdk:lease:lost": { leaseId: bigint; reason: string; atMs: number };
  /** A lease was granted. */
  "sdk:lease:granted": { leaseId: bigint; ttlS: number };
  /** The client moved to another endpoint of the group in use. */
  "sdk:registry:endpoint": { from: string; to: string; reason: string };
  /** The client moved to the other registry group (groups.ts). */
  "sdk:registry:group": GroupChange;
  /** Every instance was written again under a new lease. */
  "sdk:registry:reregistered": { leaseId: bigint; instances: number };
  /** Anti-entropy found a service's cached set differed from the registry (ids per kind). */
  "sdk:discovery:drift": {
    service: string;
    revision: bigint;
    added: string[];
    removed: string[];
    changed: string[];
  };
  /** A service's cached set became stale (registry unreachable) or fresh again. */
  "sdk:discovery:stale": { service: string; stale: boolean };
  /** A disk cache file was rejected (bad length, checksum or format). */
  "sdk:cache:rejected": { path: string; reason: string };
  /** A service's policy was read, validated and put in force. */
  "sdk:policy:applied": { service: string; modRevision: bigint };
  /** A policy failed validation; the last good one stays in force. */
  "sdk:policy:rejected": { service: string; modRevision: bigint; errors: PolicyError[] };
  /** Outlier ejection ejected a host, refused to, or returned it (the core's event, with the service). */
  "sdk:mesh:ejection": { service: string; instanceId: string } & EjectionEvent;
  /** An instance's circuit breaker opened, half-opened or closed. */
  "sdk:mesh:breaker": { service: string; instanceId: string; state: "closed" | "open" | "half-open" };
  /** A routed service's instance set changed (instance ids). */
  "sdk:mesh:instances": { service: string; added: string[]; removed: string[] };
}

export type SdkChannelName = keyof SdkChannelMessages;

/** The fields every message of each channel carries (variants may add more, as ejection's do). */
export const SDK_CHANNEL_FIELDS = {
  "sdk:watch:reconnect": ["endpoint", "attempt", "delayMs", "reason"],
  "sdk:watch:compacted": ["watcherId", "compactRevision"],
  "sdk:lease:lost": ["leaseId", "reason", "atMs"],
  "sdk:lease:granted": ["leaseId", "ttlS"],
  "sdk:registry:endpoint": ["from", "to", "reason"],
  "sdk:registry:group": ["from", "to", "reason"],
  "sdk:registry:reregistered": ["leaseId", "instances"],
  "sdk:discovery:drift": ["service", "revision", "added", "removed", "changed"],
  "sdk:discovery:stale": ["service", "stale"],
  "sdk:cache:rejected": ["path", "reason"],
  "sdk:policy:applied": ["service", "modRevision"],
  "sdk:policy:rejected": ["service", "modRevision", "errors"],
  "sdk:mesh:ejection": ["service", "instanceId", "type", "id"],
  "sdk:mesh:breaker": ["service", "instanceId", "state"],
  "sdk:mesh:instances": ["service", "added", "removed"],
} as const satisfies { readonly [N in SdkChannelName]: readonly (keyof SdkChannelMessages[N])[] };

/** Every channel name, in the order above. */
export const SDK_CHANNEL_NAMES = Object.keys(SDK_CHANNEL_FIELDS) as SdkChannelName[];

/**
 * Subscribes to one SDK channel with a typed listener; returns the function that unsubscribes.
 * (node:diagnostics_channel's own subscribe, typed: the listener runs synchronously in the
 * publisher, so it should be quick and must not throw.)
 */
export function subscribeChannel<N extends SdkChannelName>(
  name: N,
  listener: (message: SdkChannelMessages[N], name: N) => void,
): () => void {
  const onMessage = (message: unknown) => listener(message as SdkChannelMessages[N], name);
  diagnostics.subscribe(name, onMessage);
  return () => {
    diagnostics.unsubscribe(name, onMessage);
  };
}
