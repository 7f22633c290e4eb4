/**
 * Internals exposed for tests only (style guide §8 principle 1). Nothing outside `test/` may import this file.
 */
export { CertStore, safeName } from "./cert-store.js";
export {
  createSelfSigned,
  needsRenewal,
  newSerialHex,
  validateCertificate,
  TLS_POSTURE,
  TLS12_CIPHERS,
} from "./certs.js";
export { redactSubprotocols, redactUrl } from "./access-log.js";
export { trustedProxyMatcher, parseCidr } from "./config.js";
export { CHECKED_NODE_VERSIONS, checkRequestParser, newRequestParser } from "./llhttp.js";
