export { channels } from "./channels.js";
export { EtcdClient, type EtcdClientEvents, type EtcdClientOptions, type Lease } from "./client.js";
export { type Clock, ManualClock, systemClock, type Timer } from "./clock.js";
export { ETCD_MSG, EtcdError, EtcdErrorCode, fromGrpcError, isRetryable } from "./errors.js";
export {
  SDK_CHANNEL_FIELDS,
  SDK_CHANNEL_NAMES,
  type SdkChannelMessages,
  type SdkChannelName,
  subscribeChannel,
} from "./events.js";
export {
  type GroupChange,
  type GroupName,
  type GroupState,
  type GroupSwitchConfig,
  initialGroupState,
  onProbe,
  type ProbeOutcome,
} from "./group-core.js";
export type { StandbyOptions } from "./groups.js";
export { type Bytes, keyAfter, prefixEnd, toBuffer } from "./keys.js";
export { type KeepAliveStream, type KeepAliveTransport, LeaseKeeper, type LeaseState } from "./lease.js";
export * as etcdLimits from "./limits.js";
export { type Logger, silentLogger } from "./logger.js";
export {
  type CompareOp,
  compare,
  type DeleteOptions,
  op,
  type PutOptions,
  type RangeOptions,
  TxnBuilder,
} from "./txn.js";
export { Watcher, type WatchListener, type WatchOptions } from "./watch.js";
