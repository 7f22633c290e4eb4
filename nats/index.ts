/** nats/: the NATS runtime gateway and agent share. Explicit list; nothing else is public. */
export { NATS_OPTION_KEYS, compileNatsConnection } from "./settings.js";
export type { NatsOptions, NatsAuth, NatsSettings, NatsTls } from "./settings.js";
export { connectAgent, connectGateway, connectTool } from "./connect.js";
export { AckedKv, AckedPublisher, PublishError, payloadLimitBytes } from "./acked-publish.js";
export type { PubAck } from "./acked-publish.js";
export { readJobRecord, casJobRecord } from "./job-record.js";
export type { KvReadEntry, RecordStore } from "./job-record.js";
export { Outbox, EventQueue } from "./outbox.js";
export type { OutboxLimits } from "./outbox.js";
export { EventPublisher, JobEventQueue, PayloadTooLargeError } from "./publisher.js";
export type { EventSource, RetryPolicy } from "./publisher.js";
export { LeaseSigner, loadLeaseSigner } from "./lease.js";
export { leaseHeaderIn, leaseHeaderOf, leaseHeaderOfMsg } from "./lease-header.js";
export { PushConsumer } from "./push-consumer.js";
export { objectDigest, objectDigestText, objectHash } from "./object-digest.js";
export { RecordClient, JobRecordClient, RecordRefusedError } from "./records.js";
export { renderAccounts, agentPrincipalOk } from "./accounts.js";
export type { AccountsPlan } from "./accounts.js";
