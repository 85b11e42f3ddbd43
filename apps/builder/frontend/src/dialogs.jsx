import { useEffect, useState } from "react";
import { COUNT_LABELS } from "./nodes.jsx";

function Dialog({ title, testid, onClose, children, wide }) {
  useEffect(() => {
    const onKey = (event) => event.key === "Escape" && onClose();
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, [onClose]);
  return (
    <div className="dialog-backdrop" onMouseDown={(e) => e.target === e.currentTarget && onClose()}>
      <div className={`dialog${wide ? " wide" : ""}`} role="dialog" aria-label={title} data-testid={testid}>
        <div className="dialog-head">
          <h2>{title}</h2>
          <button type="button" className="close" aria-label="Close" data-testid="btn-close-dialog" onClick={onClose}>
            ×
          </button>
        </div>
        {children}
      </div>
    </div>
  );
}

// Publish: what happens to customers in flight — they stay on the version
// they entered, or move to the new one at their next step, each occupied
// node mapped to a node of the new version.
export function PublishDialog({ state, draftNodeIds, busy, error, onPublish, onClose }) {
  const inFlight = state.in_flight.filter((row) => row.node);
  const occupied = [...new Set(inFlight.map((row) => row.node))];
  const [choice, setChoice] = useState("stay");
  const [mapping, setMapping] = useState(() =>
    Object.fromEntries(occupied.map((node) => [node, draftNodeIds.includes(node) ? node : ""])),
  );
  const next = (state.journey.versions[0]?.number || 0) + 1;
  const unmapped = choice === "migrate" && occupied.some((node) => !mapping[node]);
  const submit = () => {
    const body = { in_flight: choice };
    if (choice === "migrate") {
      body.mapping = Object.fromEntries(Object.entries(mapping).filter(([, to]) => to));
    }
    onPublish(body);
  };
  return (
    <Dialog title={`Publish version ${next}`} testid="publish-dialog" onClose={onClose}>
      <p>
        The saved draft becomes version {next} and goes live
        {state.journey.status === "paused" ? " (the journey stays paused until you resume it)" : ""}.
      </p>
      {inFlight.length === 0 ? (
        <p className="help" data-testid="no-one-in-flight">
          No one is in the journey right now: there is no one to move.
        </p>
      ) : (
        <>
          <p>
            {inFlight.reduce((sum, row) => sum + row.count, 0).toLocaleString()} customer(s) are in the
            journey now:
          </p>
          <label className="choice">
            <input
              type="radio"
              name="in_flight"
              checked={choice === "stay"}
              data-testid="in-flight-stay"
              onChange={() => setChoice("stay")}
            />
            Stay on the version they entered (they finish it as it was)
          </label>
          <label className="choice">
            <input
              type="radio"
              name="in_flight"
              checked={choice === "migrate"}
              data-testid="in-flight-migrate"
              onChange={() => setChoice("migrate")}
            />
            Move to version {next} at their next step, by this mapping
          </label>
          {choice === "migrate" && (
            <table className="mapping" data-testid="mapping-form">
              <thead>
                <tr>
                  <th>Where they are now</th>
                  <th>Customers</th>
                  <th>Move to (in version {next})</th>
                </tr>
              </thead>
              <tbody>
                {occupied.map((node) => (
                  <tr key={node}>
                    <td>
                      <code>{node}</code>
                    </td>
                    <td>{inFlight.filter((r) => r.node === node).reduce((s, r) => s + r.count, 0)}</td>
                    <td>
                      <select
                        value={mapping[node] || ""}
                        data-testid={`mapping-${node}`}
                        onChange={(e) => setMapping({ ...mapping, [node]: e.target.value })}
                      >
                        <option value="">— choose a node —</option>
                        {draftNodeIds.map((id) => (
                          <option key={id} value={id}>
                            {id}
                          </option>
                        ))}
                      </select>
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </>
      )}
      {error && (
        <div className="field-error" data-testid="publish-error">
          {error}
        </div>
      )}
      <div className="dialog-actions">
        <button type="button" onClick={onClose}>
          Cancel
        </button>
        <button
          type="button"
          className="primary"
          disabled={busy || unmapped}
          title={unmapped ? "Map every occupied node first" : ""}
          data-testid="btn-confirm-publish"
          onClick={submit}
        >
          {busy ? "Publishing…" : `Publish version ${next}`}
        </button>
      </div>
    </Dialog>
  );
}

export function BacktestDialog({ hasLive, dirty, busy, error, onRun, onClose }) {
  const [days, setDays] = useState("30");
  const [draft, setDraft] = useState(!hasLive || dirty);
  return (
    <Dialog title="Backtest" testid="backtest-dialog" onClose={onClose}>
      <p>
        Replays the recorded events of the last days through the real engine and policies, on a
        virtual clock, in a transaction that is rolled back: nothing is kept and nothing is sent.
        The canvas then shows how many customers each node would have seen.
      </p>
      <div className="field">
        <label>Days back</label>
        <input
          type="number"
          min="1"
          max="366"
          value={days}
          data-testid="field-backtest-days"
          onChange={(e) => setDays(e.target.value)}
        />
      </div>
      <label className="check">
        <input
          type="checkbox"
          checked={draft}
          disabled={!hasLive}
          data-testid="field-backtest-draft"
          onChange={(e) => setDraft(e.target.checked)}
        />
        Backtest the draft (saved first) instead of the live version
      </label>
      {error && (
        <div className="field-error" data-testid="backtest-error">
          {error}
        </div>
      )}
      <div className="dialog-actions">
        <button type="button" onClick={onClose}>
          Cancel
        </button>
        <button
          type="button"
          className="primary"
          disabled={busy}
          data-testid="btn-run-backtest"
          onClick={() => onRun({ days: /^\d+$/.test(days) ? Number(days) : days, draft })}
        >
          {busy ? "Replaying…" : "Run the backtest"}
        </button>
      </div>
    </Dialog>
  );
}

export function BacktestSummary({ result, onClear }) {
  const money = (counts) =>
    Object.entries(counts || {})
      .map(([k, v]) => `${k}: ${v}`)
      .join(", ") || "none";
  return (
    <div className="backtest-summary" data-testid="backtest-summary">
      <div className="row">
        <strong>
          Backtest of {result.version} over {result.days} days
        </strong>
        <button type="button" data-testid="btn-clear-backtest" onClick={onClear}>
          Clear
        </button>
      </div>
      <div>
        {result.entered} entered ({result.customers} customers, {result.held_out} held out) ·{" "}
        {result.converted} converted · {result.completed} completed · {result.exited} exited ·{" "}
        {result.failed} failed · {result.active} still in
      </div>
      <div>Would send: {money(result.messages)}</div>
      {Object.keys(result.suppressed || {}).length > 0 && <div>Suppressed: {money(result.suppressed)}</div>}
      {Object.keys(result.skipped || {}).length > 0 && <div>Skipped: {money(result.skipped)}</div>}
      {Object.keys(result.deferred || {}).length > 0 && <div>Deferred: {money(result.deferred)}</div>}
      <details>
        <summary>How to read it</summary>
        <ul>
          {result.notes.map((note) => (
            <li key={note}>{note}</li>
          ))}
        </ul>
      </details>
    </div>
  );
}

export function CustomersDialog({ api, slug, node, metric, onClose }) {
  const [state, setState] = useState({ loading: true, data: null, error: "" });
  useEffect(() => {
    let live = true;
    api
      .customers(slug, node, metric)
      .then((data) => live && setState({ loading: false, data, error: "" }))
      .catch((exc) => live && setState({ loading: false, data: null, error: exc.message }));
    return () => {
      live = false;
    };
  }, [api, slug, node, metric]);
  const data = state.data;
  return (
    <Dialog title={`${node}: ${COUNT_LABELS[metric]}`} testid="customers-dialog" onClose={onClose} wide>
      {state.loading && <p>Loading…</p>}
      {state.error && <div className="field-error">{state.error}</div>}
      {data && (
        <>
          <p>
            {data.total.toLocaleString()} in all
            {data.total > data.shown ? `, the newest ${data.shown} shown` : ""}
            {data.admin_url && (
              <>
                {" · "}
                <a href={data.admin_url} target="_blank" rel="noreferrer" data-testid="customers-admin-link">
                  the full list in the admin
                </a>
              </>
            )}
          </p>
          <table className="customers">
            <thead>
              <tr>
                <th>Customer</th>
                <th>Email / phone</th>
                <th>{data.at_label}</th>
                <th>Enrollment</th>
                <th>Message</th>
              </tr>
            </thead>
            <tbody>
              {data.rows.map((row, i) => (
                <tr key={`${row.customer_id}-${i}`} data-testid="customer-row">
                  <td>
                    <a href={row.customer_url} target="_blank" rel="noreferrer">
                      {row.external_id}
                    </a>
                  </td>
                  <td>{row.email || row.phone}</td>
                  <td>{row.at ? new Date(row.at).toLocaleString() : ""}</td>
                  <td>
                    {row.enrollment_url && (
                      <a href={row.enrollment_url} target="_blank" rel="noreferrer">
                        {row.state || "timeline"}
                        {row.current_node ? ` at ${row.current_node}` : ""}
                      </a>
                    )}
                  </td>
                  <td>
                    {row.message_url && (
                      <a href={row.message_url} target="_blank" rel="noreferrer">
                        {row.message_status}
                      </a>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </>
      )}
    </Dialog>
  );
}
