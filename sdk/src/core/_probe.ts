import { Ajv2020 } from "ajv/dist/2020.js";
const a = new Ajv2020({ allErrors: true, strict: true });
export const v = a.compile({ type: "object" });
