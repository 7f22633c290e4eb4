/** Small shared pieces: polling, time formats, status badges, and media values (images, audio, video). */
import { memo, useEffect, useState } from "react";
import { rest } from "./api";

/** Calls `load` now and every `everyMs`, keeping the last answer (or error). */
export function usePoll<T>(load: () => Promise<T>, everyMs: number, deps: unknown[]): [T | null, string, () => void] {
  const [data, setData] = useState<T | null>(null);
  const [error, setError] = useState("");
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let alive = true;
    const once = () =>
      load().then(
        (d) => alive && (setData(d), setError("")),
        (e: Error) => alive && setError(e.message),
      );
    void once();
    const timer = everyMs > 0 ? setInterval(once, everyMs) : 0;
    return () => {
      alive = false;
      clearInterval(timer);
    };
  }, [...deps, tick]);
  return [data, error, () => setTick((t) => t + 1)];
}

export function ago(iso: string | null | undefined): string {
  if (!iso) return "—";
  const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (s < 60) return `${s.toFixed(0)} s ago`;
  if (s < 3600) return `${(s / 60).toFixed(0)} min ago`;
  return `${(s / 3600).toFixed(1)} h ago`;
}

export function duration(startIso: string | null, endIso: string | null): string {
  if (!startIso) return "—";
  const ms = (endIso ? Date.parse(endIso) : Date.now()) - Date.parse(startIso);
  return ms < 1000 ? `${ms} ms` : ms < 60_000 ? `${(ms / 1000).toFixed(1)} s` : `${(ms / 60_000).toFixed(1)} min`;
}

export function Status({ value }: { value: string }) {
  return <span className={`status s-${value || "unknown"}`}>{value || "…"}</span>;
}

export function ErrorLine({ error }: { error: string }) {
  return error ? <p className="error">{error}</p> : null;
}

interface MediaRef {
  type: string;
  uri?: string;
  asset_id?: string | null;
}

const isMedia = (v: unknown): v is MediaRef =>
  typeof v === "object" &&
  v !== null &&
  ["image", "audio", "video"].includes(String((v as MediaRef).type)) &&
  (typeof (v as MediaRef).uri === "string" || typeof (v as MediaRef).asset_id === "string");

/** The asset id a media reference points at (`asset://<id>`, `/api/assets/<id>/content`, or `asset_id`). */
function assetIdOf(ref: MediaRef): string | null {
  const uri = ref.uri ?? "";
  const m = /^asset:\/\/([A-Za-z0-9_=-]+)/.exec(uri) ?? /^\/api\/assets\/([A-Za-z0-9_=-]+)\/content/.exec(uri);
  return m ? m[1]! : uri === "" && ref.asset_id ? ref.asset_id : null;
}

/** A displayable URL for a media reference: data: and blob: as they are, assets fetched with the token. */
function useMediaUrl(ref: MediaRef): string {
  const [url, setUrl] = useState("");
  useEffect(() => {
    const id = assetIdOf(ref);
    if (!id) {
      setUrl(ref.uri ?? "");
      return;
    }
    let made = "";
    rest.assetUrl(id).then(
      (u) => ((made = u), setUrl(u)),
      () => setUrl(""),
    );
    return () => {
      if (made) URL.revokeObjectURL(made);
    };
  }, [ref.uri, ref.asset_id]);
  return url;
}

/** A stored file that is not media: a long text output (`text`), a document, any other asset. */
const isFileRef = (v: unknown): v is MediaRef & { size?: number } =>
  typeof v === "object" &&
  v !== null &&
  ["text", "document", "asset"].includes(String((v as MediaRef).type)) &&
  (String((v as MediaRef).uri ?? "").startsWith("asset://") || typeof (v as MediaRef).asset_id === "string");

/** A link to a stored file, fetched with the token: opened in a tab (text), or downloaded. */
function FileLink({ value }: { value: MediaRef & { size?: number } }) {
  const url = useMediaUrl(value);
  const size = typeof value.size === "number" ? `, ${value.size.toLocaleString("en")} bytes` : "";
  if (!url) return <span className="muted">loading {value.type}…</span>;
  const label = value.type === "text" ? `Open the text${size}` : `Download the ${value.type}${size}`;
  return value.type === "text" ? (
    <a className="file-ref" href={url} target="_blank" rel="noreferrer">
      {label}
    </a>
  ) : (
    <a className="file-ref" href={url} download={value.asset_id ?? "output"}>
      {label}
    </a>
  );
}

function Media({ value }: { value: MediaRef }) {
  const url = useMediaUrl(value);
  if (!url) return <span className="muted">loading {value.type}…</span>;
  if (value.type === "image") return <img className="media" src={url} alt="output" />;
  // Generated media has no captions track to offer; the empty one says so.
  if (value.type === "audio")
    return (
      <audio className="media" src={url} controls>
        <track kind="captions" />
      </audio>
    );
  return (
    <video className="media" src={url} controls>
      <track kind="captions" />
    </video>
  );
}

/** What one value may put on the page: a list of media or a text beyond these is cut, and the cut is said. */
const MEDIA_MAX = 50;
const VALUE_CHARS_MAX = 256 * 1024;

/** `text` as a `<pre>`, its first `VALUE_CHARS_MAX` characters at most. */
function LongText({ text }: { text: string }) {
  if (text.length <= VALUE_CHARS_MAX) return <pre className="value">{text}</pre>;
  return (
    <>
      <pre className="value">{text.slice(0, VALUE_CHARS_MAX)}</pre>
      <p className="muted">{(text.length - VALUE_CHARS_MAX).toLocaleString("en")} more characters not shown</p>
    </>
  );
}

/**
 * An output or preview value: media rendered, text as text, anything else as JSON. Memoized: a value never changes
 * once folded, and the run view redraws every frame while a job streams.
 */
export const Value = memo(function Value({ value }: { value: unknown }) {
  if (isMedia(value)) return <Media value={value} />;
  if (isFileRef(value)) return <FileLink value={value} />;
  if (Array.isArray(value) && value.length > 0 && value.every(isMedia))
    return (
      <>
        {value.slice(0, MEDIA_MAX).map((v, i) => (
          <Media key={i} value={v} />
        ))}
        {value.length > MEDIA_MAX && <p className="muted">{value.length - MEDIA_MAX} more not shown</p>}
      </>
    );
  return <LongText text={typeof value === "string" ? value : (JSON.stringify(value, null, 2) ?? String(value))} />;
});
