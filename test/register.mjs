// Lets plain `node` run the TypeScript sources (scripts, benchmarks) the way tap does, through ts-node's ESM loader.
import { register } from "node:module";
import { pathToFileURL } from "node:url";
process.env.TS_NODE_TRANSPILE_ONLY ??= "1";
register("@isaacs/ts-node-temp-fork-for-pr-2009/esm", pathToFileURL("./"));
