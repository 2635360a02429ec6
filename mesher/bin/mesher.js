#!/usr/bin/env node
// The command is built from src/cli.ts by the root `prepare` script (npm ci).
await import("../dist/cli.js");
