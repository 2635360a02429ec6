export * from "./check.js";
export * from "./history.js";
export * from "./model.js";
export * from "./report.js";
