/** Workflows: the list, and one workflow's graph with a run form generated from its input nodes. */
import { lazy, Suspense, useState } from "react";
import { type GraphNode, type Json, live, rest, type Workflow } from "./api";
import { ErrorLine, usePoll } from "./ui";

export const Graph = lazy(() => import("./graph"));

export function WorkflowList() {
  const [data, error] = usePoll(() => rest.workflows(), 0, []);
  return (
    <section>
      <h2>Workflows</h2>
      <ErrorLine error={error} />
      <table>
        <thead>
          <tr>
            <th>Name</th>
            <th>Id</th>
            <th>Nodes</th>
            <th>Description</th>
          </tr>
        </thead>
        <tbody>
          {data?.workflows.map((w) => (
            <tr key={w.id} className="link" onClick={() => (location.hash = `#/workflows/${w.id}`)}>
              <td>
                <a href={`#/workflows/${w.id}`}>{w.name}</a>
              </td>
              <td className="mono">{w.id}</td>
              <td>{w.graph.nodes.length}</td>
              <td className="muted">{w.description ?? ""}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {data && data.workflows.length === 0 && <p className="muted">No workflows saved yet (PUT /api/workflows/:id).</p>}
    </section>
  );
}

type FieldKind = "text" | "int" | "float" | "bool" | "image" | "audio" | "video" | "document" | "json";

const KINDS: Record<string, FieldKind> = {
  StringInput: "text",
  TextInput: "text",
  IntegerInput: "int",
  FloatInput: "float",
  BooleanInput: "bool",
  ImageInput: "image",
  AudioInput: "audio",
  VideoInput: "video",
  DocumentInput: "document",
};

interface Field {
  name: string;
  kind: FieldKind;
  initial: unknown;
  description: string;
}

/** The run form's fields: one per `nodetool.input.*` node with a name. */
export function fieldsOf(nodes: GraphNode[]): Field[] {
  return nodes
    .filter((n) => n.type.startsWith("nodetool.input.") && typeof n.data?.name === "string" && n.data.name !== "")
    .map((n) => ({
      name: String(n.data!.name),
      kind: KINDS[n.type.slice("nodetool.input.".length)] ?? "json",
      initial: n.data!.value,
      description: typeof n.data!.description === "string" ? n.data!.description : "",
    }));
}

function initialText(f: Field): string {
  if (f.kind === "json") return f.initial === undefined ? "" : JSON.stringify(f.initial);
  return f.initial === undefined || f.initial === null || typeof f.initial === "object" ? "" : String(f.initial);
}

function FileField({ f, set }: { f: Field; set: (v: unknown, busy: boolean) => void }) {
  const [note, setNote] = useState("");
  const [preview, setPreview] = useState("");
  async function upload(file: File | undefined): Promise<void> {
    if (!file) return;
    set(undefined, true);
    setNote(`uploading ${file.name}…`);
    if (f.kind === "image") setPreview(URL.createObjectURL(file));
    try {
      const a = await rest.uploadAsset(file);
      set({ type: f.kind, uri: `asset://${a.id}`, asset_id: a.id }, false);
      setNote(`uploaded ${file.name} as asset ${a.id}`);
    } catch (e) {
      set(undefined, false);
      setNote(`upload failed: ${(e as Error).message}`);
    }
  }
  const accept = f.kind === "document" ? undefined : `${f.kind}/*`;
  return (
    <>
      <input
        id={`f-${f.name}`}
        type="file"
        name={f.name}
        accept={accept}
        onChange={(e) => void upload(e.target.files?.[0])}
      />
      {preview && <img className="thumb" src={preview} alt="" />}
      <span className="muted upload-note">{note}</span>
    </>
  );
}

function parseField(f: Field, raw: string): unknown {
  if (f.kind === "int" || f.kind === "float") return raw === "" ? undefined : Number(raw);
  if (f.kind === "json") return raw === "" ? undefined : JSON.parse(raw);
  return raw;
}

function RunForm({ workflow }: { workflow: Workflow }) {
  const fields = fieldsOf(workflow.graph.nodes);
  const [values, setValues] = useState<Json>({});
  const [busy, setBusy] = useState(0);
  const [error, setError] = useState("");
  const setValue = (name: string, v: unknown) => setValues((old) => ({ ...old, [name]: v }));
  async function run(e: React.FormEvent): Promise<void> {
    e.preventDefault();
    setError("");
    try {
      const params: Json = {};
      for (const [k, v] of Object.entries(values)) if (v !== undefined) params[k] = v;
      const jobId = await live.run(workflow.id, params);
      location.hash = `#/jobs/${jobId}`;
    } catch (err) {
      setError((err as Error).message);
    }
  }
  return (
    <form className="run-form" onSubmit={(e) => void run(e)}>
      {fields.map((f) => (
        <div key={f.name} className="field">
          <label htmlFor={`f-${f.name}`} title={f.description}>
            {f.name}
          </label>
          {f.kind === "bool" ? (
            <input
              id={`f-${f.name}`}
              type="checkbox"
              name={f.name}
              defaultChecked={f.initial === true}
              onChange={(e) => setValue(f.name, e.target.checked)}
            />
          ) : ["image", "audio", "video", "document"].includes(f.kind) ? (
            <FileField f={f} set={(v, b) => (setValue(f.name, v), setBusy((n) => n + (b ? 1 : -1)))} />
          ) : (
            <input
              id={`f-${f.name}`}
              type={f.kind === "int" || f.kind === "float" ? "number" : "text"}
              step={f.kind === "float" ? "any" : undefined}
              name={f.name}
              defaultValue={initialText(f)}
              onChange={(e) => {
                try {
                  setValue(f.name, parseField(f, e.target.value));
                } catch {
                  setError(`${f.name}: not valid JSON`);
                }
              }}
            />
          )}
        </div>
      ))}
      <button type="submit" disabled={busy > 0}>
        Run
      </button>
      <ErrorLine error={error} />
    </form>
  );
}

export function WorkflowView({ id }: { id: string }) {
  const [wf, error] = usePoll(() => rest.workflow(id), 0, [id]);
  if (!wf) return <ErrorLine error={error} />;
  return (
    <section>
      <h2>
        {wf.name} <small className="mono">{wf.id}</small>
      </h2>
      {wf.description && <p className="muted">{wf.description}</p>}
      <div className="split">
        <Suspense fallback={<div className="graph" />}>
          <Graph nodes={wf.graph.nodes} edges={wf.graph.edges} />
        </Suspense>
        <RunForm workflow={wf} />
      </div>
    </section>
  );
}
