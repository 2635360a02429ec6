// A pino logger is injectable everywhere; the default is silent so a library never writes to
// the host's stdout uninvited.

import { type Logger, pino } from "pino";

export type { Logger };

export const silentLogger: Logger = pino({ level: "silent" });
