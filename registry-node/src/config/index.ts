export * from "./config.js";
export * from "./flags.js";
