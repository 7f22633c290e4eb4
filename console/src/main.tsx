/** The console's shell: hash routes (no server routes to add), the nav, and the sign-in when tokens are on. */
import { Component, type ReactNode, useEffect, useState } from "react";
import { createRoot } from "react-dom/client";
import { rest, session } from "./api";
import { Chat } from "./chat";
import { Fleet } from "./fleet";
import { JobList } from "./jobs";
import { RunView } from "./run-view";
import "./styles.css";
import { WorkflowList, WorkflowView } from "./workflows";

function useHash(): string {
  const [hash, setHash] = useState(location.hash);
  useEffect(() => {
    const on = () => setHash(location.hash);
    addEventListener("hashchange", on);
    return () => removeEventListener("hashchange", on);
  }, []);
  return hash;
}

function Page({ hash }: { hash: string }) {
  const [, view = "workflows", id = ""] = hash.replace(/^#/, "").split("/");
  switch (view) {
    case "workflows":
      return id ? <WorkflowView id={id} /> : <WorkflowList />;
    case "jobs":
      return id ? <RunView key={id} jobId={id} /> : <JobList />;
    case "fleet":
      return <Fleet />;
    case "chat":
      return <Chat threadId={id} />;
    default:
      return <p>No such page.</p>;
  }
}

/**
 * A page that throws while drawing (data it did not expect) shows the error instead of unmounting the whole console;
 * the shell stays, and the next route (another `hash`) draws afresh.
 */
class PageBoundary extends Component<{ hash: string; children: ReactNode }, { error: string }> {
  state = { error: "" };
  static getDerivedStateFromError(e: unknown): { error: string } {
    return { error: e instanceof Error ? e.message : String(e) };
  }
  componentDidUpdate(prev: { hash: string }): void {
    if (prev.hash !== this.props.hash && this.state.error) this.setState({ error: "" });
  }
  render(): ReactNode {
    if (!this.state.error) return this.props.children;
    return (
      <p className="error" data-testid="page-error">
        This page could not be drawn: {this.state.error}
      </p>
    );
  }
}

function SignIn({ onDone }: { onDone: () => void }) {
  const [token, setToken] = useState("");
  const [error, setError] = useState("");
  async function submit(e: React.FormEvent): Promise<void> {
    e.preventDefault();
    session.signIn(token.trim());
    if (await rest.probeAuth()) onDone();
    else {
      session.signOut();
      setError("The gateway refused that token.");
    }
  }
  return (
    <form className="signin" onSubmit={(e) => void submit(e)}>
      <h2>Sign in</h2>
      <p className="muted">This gateway needs an API token. It is kept in this tab only (session storage).</p>
      <input
        type="password"
        name="token"
        autoComplete="off"
        placeholder="API token"
        value={token}
        onChange={(e) => setToken(e.target.value)}
      />
      <button type="submit" disabled={!token.trim()}>
        Sign in
      </button>
      {error && <p className="error">{error}</p>}
    </form>
  );
}

const NAV = [
  ["workflows", "Workflows"],
  ["jobs", "Jobs"],
  ["fleet", "Fleet"],
  ["chat", "Chat"],
] as const;

function App() {
  const hash = useHash();
  const [auth, setAuth] = useState<"checking" | "ok" | "needed">("checking");
  useEffect(() => {
    session.onUnauthorized(() => setAuth("needed"));
    rest.probeAuth().then(
      (ok) => setAuth(ok ? "ok" : "needed"),
      () => setAuth("ok"),
    );
  }, []);
  const view = hash.replace(/^#\/?/, "").split("/")[0] || "workflows";
  return (
    <>
      <header>
        <h1>Nodeway</h1>
        <nav>
          {NAV.map(([k, label]) => (
            <a key={k} href={`#/${k}`} className={view === k ? "active" : ""}>
              {label}
            </a>
          ))}
        </nav>
        {session.token() && auth === "ok" && (
          <button type="button" className="link-button" onClick={() => (session.signOut(), setAuth("needed"))}>
            Sign out
          </button>
        )}
      </header>
      <main>
        {auth === "needed" ? (
          <SignIn onDone={() => setAuth("ok")} />
        ) : auth === "ok" ? (
          <PageBoundary hash={hash}>
            <Page hash={hash} />
          </PageBoundary>
        ) : null}
      </main>
    </>
  );
}

createRoot(document.getElementById("root")!).render(<App />);
