export * from "./certs.js";
export * from "./cluster.js";
export * from "./command.js";
export * from "./faultproxy.js";
export * from "./ports.js";
export * from "./proc.js";
export * from "./tmp.js";
export * from "./watchcheck.js";
