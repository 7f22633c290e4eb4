/** client/: the typed client of a Nodeway gateway, for browsers and Node. Explicit list; nothing else is public. */
export { NodewayClient } from "./client.js";
export type { AgentInfo, ChatRequest, ChatTurn, ClientOptions, RunRequest } from "./client.js";
export type { CancelResult, JobHandle, JobOutcome } from "./job.js";
export { ClientErrorCode, NodewayError } from "./errors.js";
export type { ConnState, WebSocketCtor, WsLike } from "./socket.js";
export type { WireFormat } from "./codec.js";
export type {
  JobEvent,
  JobResumed,
  JobRecord,
  JobState,
  Workflow,
  ChatThread,
  ThreadMessage,
} from "../protocol/index.js";
