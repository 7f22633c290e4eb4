/** uWebSockets.js for the bench peers, loaded the way the gateway loads it (native build required). */
import { createRequire } from "node:module";
import type * as UwsTypes from "uWebSockets.js";

const require = createRequire(import.meta.url);
export const uws = require("uWebSockets.js") as typeof UwsTypes;
