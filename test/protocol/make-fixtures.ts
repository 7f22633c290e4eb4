// Regenerates the golden fixtures. Run only on purpose (a wire change): node --import ./test/register.mjs
// test/protocol/make-fixtures.ts
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { encodeMsgpack, encodeJson } from "../../protocol/index.js";
import { SAMPLES } from "./samples.js";
const dir = join(process.cwd(), "test", "fixtures", "protocol");
for (const [name, msg] of Object.entries(SAMPLES)) {
  writeFileSync(join(dir, `${name}.msgpack.hex`), Buffer.from(encodeMsgpack(msg)).toString("hex") + "\n");
  writeFileSync(join(dir, `${name}.json`), encodeJson(msg) + "\n");
}
