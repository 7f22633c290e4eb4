/**
 * Internals exposed for tests only (style guide §8 principle 1). Nothing outside `test/` may import this file.
 */
export { decodeFlatMap, encodeFlatMap } from "./flat-map.js";
