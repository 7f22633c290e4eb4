/**
 * Node types of services this fleet cannot reach yet (Gmail over IMAP, ChromaDB, kie.ai, fal.ai, OpenAI's realtime
 * API, PDF text extraction, Comfy Cloud). They carry NodeTool's properties and outputs, so workflows that use them are accepted
 * and saved like any other; run, each fails saying which service it needs and the setting NodeTool reads for it.
 */
import { NodeError, type NodeDef } from "../engine/types.js";
import type { PropertyMetadata } from "../../protocol/index.js";
import { enumProp, prop } from "./util.js";

interface StubSpec {
  type: string;
  title: string;
  description: string;
  properties: PropertyMetadata[];
  outputs: { name: string; type: string }[];
  /** Takes handles it does not declare (a ComfyUI workflow's `<node id>:<input>`). */
  isDynamic?: boolean;
  /** What it needs, as the error says it: the service and the setting that would provide it. */
  needs: string;
}

function stub(spec: StubSpec): NodeDef {
  const { needs, ...rest } = spec;
  return {
    ...rest,
    kind: "process",
    process: () => {
      throw new NodeError(`${spec.type} is not available on this fleet: it needs ${needs}`);
    },
  };
}

const IMAP =
  "Gmail over IMAP (the settings GOOGLE_MAIL_USER and GOOGLE_APP_PASSWORD), which Nodeway's agents do not connect to yet";
const DOC = { type: "document", uri: "", asset_id: null, data: null };

export const STUB_NODES: readonly NodeDef[] = [
  stub({
    type: "lib.comfy.RunWorkflowOnCloud",
    title: "Run ComfyUI Workflow (Comfy Cloud)",
    description: "Runs a ComfyUI workflow (API format) on Comfy Cloud.",
    properties: [prop("workflow", "str", ""), prop("timeout", "int", 600), prop("previews", "bool", false)],
    outputs: [{ name: "output", type: "dict[str, any]" }],
    isDynamic: true,
    needs:
      "Comfy Cloud (the setting COMFY_API_KEY), which Nodeway's agents do not call; lib.comfy.RunWorkflow runs the same workflow on an agent beside a ComfyUI (--comfyui-url)",
  }),
  stub({
    type: "lib.mail.GmailSearch",
    title: "Gmail Search",
    description: "Searches Gmail using Gmail-specific search operators and yields matching emails.",
    properties: [
      prop("from_address", "str", ""),
      prop("to_address", "str", ""),
      prop("subject", "str", ""),
      prop("body", "str", ""),
      enumProp(
        "date_filter",
        ["SINCE_ONE_HOUR", "SINCE_ONE_DAY", "SINCE_ONE_WEEK", "SINCE_ONE_MONTH", "SINCE_ONE_YEAR"],
        "SINCE_ONE_DAY",
      ),
      prop("keywords", "str", ""),
      enumProp("folder", ["INBOX", "[Gmail]/Sent Mail", "[Gmail]/Drafts", "[Gmail]/Spam", "[Gmail]/Trash"], "INBOX"),
      prop("text", "str", ""),
      prop("max_results", "int", 50),
    ],
    outputs: [
      { name: "email", type: "dict" },
      { name: "message_id", type: "str" },
    ],
    needs: IMAP,
  }),
  stub({
    type: "lib.mail.AddLabel",
    title: "Add Label",
    description: "Adds a label to a Gmail message.",
    properties: [prop("message_id", "str", ""), prop("label", "str", "")],
    outputs: [{ name: "output", type: "bool" }],
    needs: IMAP,
  }),
  stub({
    type: "vector.chroma.HybridSearch",
    title: "Hybrid Search",
    description: "Hybrid search combining semantic and keyword-based search in a ChromaDB collection.",
    properties: [
      prop("collection", "collection", { type: "collection", name: "" }),
      prop("text", "str", ""),
      prop("n_results", "int", 5),
      prop("k_constant", "float", 60.0),
      prop("min_keyword_length", "int", 3),
    ],
    outputs: [
      { name: "ids", type: "list[str]" },
      { name: "documents", type: "list[str]" },
      { name: "metadatas", type: "list[dict]" },
      { name: "distances", type: "list[float]" },
      { name: "scores", type: "list[float]" },
    ],
    needs:
      "a ChromaDB vector store (NodeTool's CHROMA_URL or CHROMA_PATH setting), which Nodeway's agents do not offer yet",
  }),
  stub({
    type: "kie.image.NanoBanana",
    title: "Nano Banana (kie.ai)",
    description: "Generate images with Google's Nano Banana model through kie.ai.",
    properties: [
      prop("prompt", "str", ""),
      enumProp("image_size", ["1:1", "9:16", "16:9", "3:4", "4:3", "3:2", "2:3", "5:4", "4:5", "21:9"], "1:1"),
    ],
    outputs: [{ name: "output", type: "image" }],
    needs: "the kie.ai image API (the setting KIE_API_KEY), which Nodeway's agents do not call yet",
  }),
  stub({
    type: "fal.text_to_image.NanoBanana2",
    title: "Nano Banana 2 (fal.ai)",
    description: "Generate images with Google's Nano Banana 2 model through fal.ai.",
    properties: [
      prop("prompt", "str", ""),
      enumProp("resolution", ["1K", "2K", "4K"], "1K"),
      enumProp("aspect_ratio", ["1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3", "21:9"], "1:1"),
      prop("num_images", "int", 1),
      enumProp("output_format", ["png", "jpeg", "webp"], "png"),
    ],
    outputs: [{ name: "output", type: "image" }],
    needs: "the fal.ai API (the setting FAL_API_KEY), which Nodeway's agents do not call yet",
  }),
  stub({
    type: "lib.pymupdf.ExtractText",
    title: "Extract Text",
    description: "Extract plain text from a PDF document.",
    properties: [
      prop("pdf", "document", DOC, { description: "The PDF document to extract text from" }),
      prop("start_page", "int", 0, { description: "First page to extract (0-based index)" }),
      prop("end_page", "int", -1, { description: "Last page to extract (-1 for last page)" }),
    ],
    outputs: [{ name: "output", type: "str" }],
    needs: "a PDF text extractor (NodeTool's PyMuPDF), which Nodeway's agents do not have yet",
  }),
  stub({
    type: "openai.agents.RealtimeAgent",
    title: "Realtime Agent",
    description: "Stream audio to and from OpenAI's Realtime API.",
    properties: [
      prop("model", "str", "gpt-4o-mini-realtime-preview"),
      prop("system", "str", ""),
      prop("chunk", "chunk", { type: "chunk", content: "" }),
      enumProp("voice", ["alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse"], "alloy"),
      prop("speed", "float", 1.0),
      prop("temperature", "float", 0.8),
    ],
    outputs: [
      { name: "text", type: "str" },
      { name: "audio", type: "audio" },
      { name: "chunk", type: "chunk" },
    ],
    needs:
      "OpenAI's Realtime API over a websocket session (the setting OPENAI_API_KEY, with realtime audio streaming), which Nodeway's agents do not open yet",
  }),
  stub({
    type: "nodetool.input.RealtimeAudioInput",
    title: "Realtime Audio Input",
    description: "Accepts streaming audio data for workflows.",
    properties: [
      prop("name", "str", ""),
      prop("value", "audio", { type: "audio", uri: "", asset_id: null, data: null }),
      prop("description", "str", ""),
    ],
    outputs: [{ name: "chunk", type: "chunk" }],
    needs:
      "a realtime audio stream from the client (NodeTool's streaming input over its websocket), which Nodeway's gateway does not carry yet",
  }),
];
