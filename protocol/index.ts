/** protocol/: the contracts every other folder meets on. Explicit list; nothing else is public. */
export { ErrorCode, ProtocolError, GraphError, InvalidConfigError, assertNever, redactSecretsIn, redactUrl, secretsOfUrl } from "./errors.js";
export type { WireError } from "./errors.js";
export {
  subjects,
  checkToken,
  jobIdOfEventSubject,
  jobIdOfCancelSubject,
  poolConsumer,
  eventMsgId,
  jobKeys,
  threadKeys,
  agentKey,
  workflowKey,
  STREAM_JOBS,
  STREAM_EVENTS,
  KV_JOBS,
  KV_WORKFLOWS,
  KV_THREADS,
  KV_TOKENS,
  KV_AGENTS,
  KV_NODES,
  OBJ_ASSETS,
  BUILTIN_POOLS,
} from "./subjects.js";
export type { Graph, GraphNode, GraphEdge, Workflow, NodeMetadata, PropertyMetadata } from "./graph.js";
export { JobState, TERMINAL_STATES, isTerminal, canTransition, ExecutionStrategy, pickStrategy, CancelReason, AgentState } from "./jobs.js";
export type {
  JobRecord,
  JobDispatch,
  JobCancel,
  AgentControl,
  AgentRegistration,
  AgentCapabilities,
  GpuInfo,
  NatsMessage,
} from "./jobs.js";
export { NodeStatus, JOB_EVENT_TYPES, GRAPH_EVENT_TYPES, isTerminalEvent, isCoalescable, jobUpdate } from "./events.js";
export type {
  JobEvent,
  JobEventHead,
  JobEventType,
  EventBase,
  JobUpdate,
  NodeUpdate,
  NodeProgress,
  EdgeUpdate,
  OutputUpdate,
  Chunk,
  LogUpdate,
  Notification,
  PreviewUpdate,
  ErrorEvent,
  Handlers,
  EventEnvelope,
  Unstamped,
  JobEventBody,
  JobUpdateBody,
  GraphEvent,
  GraphEventType,
} from "./events.js";
export { CLIENT_COMMANDS } from "./client.js";
export type {
  ClientCommand,
  ClientCommandName,
  RunJobData,
  JobResumed,
  CommandResponse,
  Pong,
  GenerationStopped,
  ThreadMessageFrame,
  ClientError,
  ServerMessage,
} from "./client.js";
export {
  CODEC_LIMITS,
  encodeMsgpack,
  withSeqMsgpack,
  decodeMsgpack,
  decodeEventHead,
  encodeJson,
  parseJson,
  utf8,
  asClientCommand,
  asJobEvent,
  asJobDispatch,
  asJobCancel,
  asAgentControl,
  asAgentRegistration,
  asServerMessage,
  decodeClientFrame,
  decodeJobEvent,
  decodeJobDispatch,
  decodeJobCancel,
  decodeAgentControl,
  decodeAgentRegistration,
} from "./codec.js";
export { newId } from "./ids.js";
export { checkSchema, GraphSchema, IdSchema, RunOptionsSchema, WorkflowBodySchema, ThreadBodySchema, MessageBodySchema, ClientCommandSchemas, type RunOptions } from "./schemas.js";
export { JOB_QUEUE_DEFAULTS, EVENTS_DEFAULTS, EVENTS_RESERVED_PER_JOB, jobEventBudget, JOBS_KV_DEFAULTS, AGENT_TTL_MS, AGENT_HEARTBEAT_MS } from "./streams.js";
export { validateGraph, validateParams, prepareGraph, poolOfGraph, INPUT_NODE_PREFIX } from "./graph-check.js";
export type { NodeCatalog, PreparedGraph } from "./graph-check.js";
export { ASSETS_DEFAULTS, ASSET_META, MEDIA_REF_TYPES, MEDIA_TYPES, extensionOf, isAssetId, assetUri, assetIdOfUri, assetRef, assetInfo, mediaRefOf, refTypeOf } from "./assets.js";
export type { AssetRef, AssetRefType, AssetInfo, MediaRef, StoredObject } from "./assets.js";
export { LLM_PROVIDERS, PROVIDER_SETTING, MAX_MODELS_PER_PROVIDER, THREAD_LIMITS, isLlmProvider, languageModelOf, parseChatCompletion, parseChatTurn, ChatRequestError } from "./chat.js";
export type { LlmProvider, LanguageModelRef, AgentModel, ChatTurn, ChatCompletionRequest, ChatTurnRequest, ChatThread, ThreadMessage, FinishReason, ChatUsage, ChatEndMetadata } from "./chat.js";
