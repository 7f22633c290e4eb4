/**
 * The client protocol on `/ws`: frames `{command, data, request_id?}` in, messages with `type` out.
 */
import type { Graph } from "./graph.js";
import type { JobEvent } from "./events.js";
import type { JobState, ExecutionStrategy } from "./jobs.js";
import type { WireError } from "./errors.js";
import type { ThreadMessage } from "./chat.js";

export interface RunJobData {
  workflow_id?: string;
  graph?: Graph;
  params?: Record<string, unknown>;
  job_id?: string;
  execution_strategy?: ExecutionStrategy;
  timeout_s?: number;
  requirements?: { pool?: string };
  [k: string]: unknown;
}

export type ClientCommand =
  | { command: "run_job"; data: RunJobData; request_id?: string }
  | { command: "reconnect_job"; data: { job_id: string; last_seq?: number; workflow_id?: string }; request_id?: string }
  | { command: "cancel_job"; data: { job_id: string }; request_id?: string }
  | { command: "get_status"; data: { job_id?: string }; request_id?: string }
  | { command: "chat_message"; data: Record<string, unknown>; request_id?: string }
  | { command: "stop"; data: { job_id?: string; thread_id?: string }; request_id?: string }
  | { command: "set_mode"; data: { mode: "text" | "binary" }; request_id?: string }
  | { command: "ping"; data?: Record<string, unknown>; request_id?: string };

export type ClientCommandName = ClientCommand["command"];
export const CLIENT_COMMANDS: ReadonlySet<ClientCommandName> = new Set<ClientCommandName>([
  "run_job",
  "reconnect_job",
  "cancel_job",
  "get_status",
  "chat_message",
  "stop",
  "set_mode",
  "ping",
]);

/** Header sent before a replay: then every stored event with `seq > last_seq`, then live ones. */
export interface JobResumed {
  type: "job_resumed";
  job_id: string;
  workflow_id: string;
  status: JobState;
  last_seq: number;
  replay_count: number;
  /** The events after `last_seq` are older than retention: the client gets the job's state instead. */
  replay_incomplete?: boolean;
}

/** Answer to a command (NodeTool TS `rpc_response`). */
export interface CommandResponse {
  type: "rpc_response";
  command: ClientCommandName | string;
  request_id?: string;
  result?: unknown;
  error?: WireError;
}

export interface Pong {
  type: "pong";
  ts: number;
  request_id?: string;
}

export interface GenerationStopped {
  type: "generation_stopped";
  job_id?: string;
  thread_id?: string;
}

/** A frame-level error that is not tied to a job (bad frame, unknown command). */
export interface ClientError {
  type: "error";
  code: string;
  message: string;
  request_id?: string;
}

/** A thread's new message, sent to the socket whose `chat_message` it answers (NodeTool's chat `message`). */
export type ThreadMessageFrame = { type: "message" } & ThreadMessage;

/** Every message the server sends on `/ws`. */
export type ServerMessage =
  | JobEvent
  | JobResumed
  | CommandResponse
  | Pong
  | GenerationStopped
  | ClientError
  | ThreadMessageFrame;
