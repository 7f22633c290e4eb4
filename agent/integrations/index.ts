/**
 * agent/integrations/: the outside services nodes talk to (ComfyUI, language-model providers). Explicit list.
 * The providers are imported by path where they are used (`./integrations/providers.js`): their SDKs load only
 * when a model is listed or called.
 */
export { ComfyClient, applyOverrides, comfyNodes } from "./comfyui.js";
export { classesCatalog, compileComfyGroups, parseObjectInfo } from "./comfy-classes.js";
export type { ComfyClass, ComfyClasses } from "./comfy-classes.js";
export type {
  ChatAudio,
  ChatImage,
  ChatMessage,
  ChatPiece,
  ChatRequest,
  ProviderName,
  ToolCall,
  ToolChoice,
  ToolSpec,
} from "./providers.js";
