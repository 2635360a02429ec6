// The SDK's error catalogue (STYLE.md §4, after undici's UND_ERR_* and fastify's FST_ERR_*).
// Codes are stable: tests and users match on `code`, never on message text. Cores mostly
// return these as values (`{ ok: false, error }`) so that a bad registry value cannot throw
// inside a watch callback; the shell decides whether to throw, log or map to a status.

export const SdkErrorCode = {
  /** A policy value failed schema or semantic validation. */
  INVALID_POLICY: "SDK_ERR_INVALID_POLICY",
  /** An instance value read from the registry could not be decoded. */
  BAD_INSTANCE: "SDK_ERR_BAD_INSTANCE",
  /** A registry key does not have the <prefix>/services/<service>/<id> or policy shape. */
  BAD_KEY: "SDK_ERR_BAD_KEY",
  /** A service name or instance id is empty, too long or contains "/". */
  BAD_NAME: "SDK_ERR_BAD_NAME",
  /** A caller passed an argument a core cannot accept (a programming error, thrown). */
  INVALID_ARGUMENT: "SDK_ERR_INVALID_ARGUMENT",
  /** A bound from limits.ts was exceeded. */
  LIMIT_EXCEEDED: "SDK_ERR_LIMIT_EXCEEDED",
} as const;
export type SdkErrorCode = (typeof SdkErrorCode)[keyof typeof SdkErrorCode];

export class SdkError extends Error {
  readonly code: SdkErrorCode;
  /** Field paths and messages, e.g. `routes[0].split[1].weight: must be >= 0`. */
  readonly details: readonly string[];
  constructor(code: SdkErrorCode, message: string, details: readonly string[] = []) {
    super(message);
    this.name = "SdkError";
    this.code = code;
    this.details = details;
  }
}

/** Asserts a programming invariant in a core (STYLE.md §3). Throws: never used for bad input data. */
export function invariant(condition: unknown, message: string): asserts condition {
  if (!condition) throw new SdkError(SdkErrorCode.INVALID_ARGUMENT, message);
}

export type Result<T, E = SdkError> = { ok: true; value: T } | { ok: false; error: E };
