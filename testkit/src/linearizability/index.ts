export * from "./core/index.js";
export * from "./recorder.js";
