// Lets plain `node` run the TypeScript benchmark sources, through ts-node's ESM loader (a copy of test/register.mjs).
import { register } from "node:module";
import { pathToFileURL } from "node:url";
process.env.TS_NODE_TRANSPILE_ONLY ??= "1";
register("@isaacs/ts-node-temp-fork-for-pr-2009/esm", pathToFileURL("./"));
