/** Chat: threads, and a conversation with the fleet's models over `chat_message` (answers stream in). */
import { useEffect, useRef, useState } from "react";
import { live, rest, type ThreadMessage } from "./api";
import { appendTail, TERMINAL } from "./run-state";
import { ErrorLine, usePoll } from "./ui";

/** The answer being streamed for `jobId` (its last `TEXT_MAX` characters: a model may stream without end). */
function useAnswer(jobId: string, onEnd: () => void): string {
  const [text, setText] = useState("");
  const buf = useRef("");
  useEffect(() => {
    if (!jobId) return;
    buf.current = "";
    setText("");
    let raf = 0;
    const stop = live.watch(jobId, 0, function onEvent(m) {
      if (m.type === "chunk" && typeof m.content === "string" && !m.thinking)
        buf.current = appendTail(buf.current, m.content)[0];
      if (m.type === "job_update" && TERMINAL.has(String(m.status))) onEnd();
      if (raf === 0) raf = requestAnimationFrame(() => ((raf = 0), setText(buf.current)));
    });
    return () => (stop(), cancelAnimationFrame(raf));
  }, [jobId, onEnd]);
  return text;
}

function Conversation({ threadId, model, onSent }: { threadId: string; model: string; onSent: (t: string) => void }) {
  const [msgs, error, reload] = usePoll(
    () => (threadId ? rest.messages(threadId) : Promise.resolve({ messages: [] as ThreadMessage[] })),
    0,
    [threadId],
  );
  const [jobId, setJobId] = useState("");
  const [input, setInput] = useState("");
  const [sendError, setSendError] = useState("");
  const endRef = useRef<() => void>(() => undefined);
  endRef.current = () => (setJobId(""), reload());
  const [onEnd] = useState(() => () => endRef.current());
  const answer = useAnswer(jobId, onEnd);
  async function send(e: React.FormEvent): Promise<void> {
    e.preventDefault();
    setSendError("");
    try {
      const r = await live.chat({ ...(threadId ? { thread_id: threadId } : {}), content: input, model });
      setInput("");
      setJobId(r.job_id);
      if (r.thread_id !== threadId) onSent(r.thread_id);
      else reload();
    } catch (err) {
      setSendError((err as Error).message);
    }
  }
  return (
    <div className="conversation">
      <ErrorLine error={error} />
      {msgs?.messages.map((m) => (
        <div key={m.id} className={`msg m-${m.role}`}>
          <small>{m.role === "assistant" ? (m.model ?? "assistant") : "you"}</small>
          <div>{m.content}</div>
          {m.error && <ErrorLine error={m.error.message} />}
        </div>
      ))}
      {jobId && (
        <div className="msg m-assistant streaming">
          <small>{model}</small>
          <div>{answer || "…"}</div>
        </div>
      )}
      <form className="chat-input" onSubmit={(e) => void send(e)}>
        <textarea name="content" value={input} onChange={(e) => setInput(e.target.value)} rows={3} />
        <button type="submit" disabled={!input.trim() || !model || jobId !== ""}>
          Send
        </button>
      </form>
      <ErrorLine error={sendError} />
    </div>
  );
}

export function Chat({ threadId }: { threadId: string }) {
  const [threads, error, reload] = usePoll(() => rest.threads(), 0, [threadId]);
  const [models] = usePoll(() => rest.models(), 0, []);
  const [model, setModel] = useState("");
  const chosen = model || models?.data[0]?.id || "";
  return (
    <section className="chat">
      <aside>
        <a href="#/chat">+ New thread</a>
        <ErrorLine error={error} />
        {threads?.threads.map((t) => (
          <a key={t.id} href={`#/chat/${t.id}`} className={t.id === threadId ? "active" : ""}>
            {t.title || t.id}
          </a>
        ))}
      </aside>
      <div>
        <label>
          model{" "}
          <select name="model" value={chosen} onChange={(e) => setModel(e.target.value)}>
            {models?.data.map((m) => (
              <option key={m.id} value={m.id}>
                {m.id}
              </option>
            ))}
          </select>
        </label>
        <Conversation
          threadId={threadId}
          model={chosen}
          onSent={(t) => {
            reload();
            location.hash = `#/chat/${t}`;
          }}
        />
      </div>
    </section>
  );
}
