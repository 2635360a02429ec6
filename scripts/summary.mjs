// Prints the closing line CI reads: `tests: N passed, N failed` (static checks that
// failed count as failed tests, so a lint error can never end in "0 failed").
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

const [dir, checkStatus] = process.argv.slice(2);
let passed = 0;
let failed = 0;
let skipped = 0;
for (const file of readdirSync(dir)) {
  if (!file.endsWith(".json")) continue;
  const r = JSON.parse(readFileSync(join(dir, file), "utf8"));
  passed += r.numPassedTests ?? 0;
  failed += r.numFailedTests ?? 0;
  skipped += (r.numPendingTests ?? 0) + (r.numTodoTests ?? 0);
  // A file that failed to load reports no tests; count it as a failure.
  for (const suite of r.testResults ?? []) {
    if (suite.status === "failed" && (suite.assertionResults ?? []).length === 0) failed += 1;
  }
}
if (checkStatus !== "0" && failed === 0) failed = 1;
console.log(`tests: ${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ""}`);
process.exit(failed > 0 || checkStatus !== "0" ? 1 : 0);
