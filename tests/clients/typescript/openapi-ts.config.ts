// The client under test: generated from the reference document (a copy the test patches; see
// tests/test_generated_clients.py), with every answer parsed by zod against its response schema.
import { defineConfig } from "@hey-api/openapi-ts";

const input = process.env.CRMGATE_REFERENCE;
const output = process.env.CRMGATE_CLIENT_DIR;
if (!input || !output) {
  throw new Error("set CRMGATE_REFERENCE (the reference copy) and CRMGATE_CLIENT_DIR (output)");
}

export default defineConfig({
  input,
  output: { path: output },
  plugins: [
    "@hey-api/client-fetch",
    // RFC 3339 date-times (OpenAPI's `date-time`) carry an offset, "Z" or "+02:00" alike
    { name: "zod", dates: { offset: true } },
    // request: false: the calls program is the client under test, not the reference's judge
    { name: "@hey-api/sdk", validator: { request: false, response: "zod" } },
  ],
});
