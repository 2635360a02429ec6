export * from "./backend.js";
export * from "./bbolt-storage.js";
export * from "./core/revision.js";
export * from "./errors.js";
export * from "./kvstore.js";
export * from "./mem-storage.js";
export * from "./watchable.js";
