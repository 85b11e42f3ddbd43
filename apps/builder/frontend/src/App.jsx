import { useCallback, useEffect, useMemo, useRef, useState } from "react";
import { Background, Controls, MiniMap, ReactFlow, useReactFlow } from "@xyflow/react";
import { makeApi } from "./api.js";
import {
  TRIGGER_ID,
  connect,
  disconnect,
  edgesOf,
  freeOutput,
  freshId,
  layout,
  outputsOf,
  positionOf,
  removeNodes,
  renameNode,
  replaceNode,
  triggerPosition,
  withPositions,
} from "./graph.js";
import { nodeTypes } from "./nodes.jsx";
import { NodePanel, SettingsPanel, checkNodeId } from "./panels.jsx";
import { BacktestDialog, BacktestSummary, CustomersDialog, PublishDialog } from "./dialogs.jsx";

const COUNTS_EVERY_MS = 15000;
const DRAG_TYPE = "application/x-tenure-node";

function Palette({ kinds, readOnly, onAdd }) {
  const groups = [];
  for (const kind of kinds) {
    let group = groups.find((g) => g.name === kind.group);
    if (!group) groups.push((group = { name: kind.group, kinds: [] }));
    group.kinds.push(kind);
  }
  return (
    <aside className="palette" data-testid="palette">
      <h2>Add a step</h2>
      {readOnly && <p className="help">Read only: you may look, not change.</p>}
      {groups.map((group) => (
        <div key={group.name} className="palette-group">
          <h3>{group.name}</h3>
          {group.kinds.map((kind) => {
            const enabled = kind.enabled && !readOnly;
            return (
              <button
                key={kind.type}
                type="button"
                className={`palette-item kind-${kind.type}`}
                disabled={!enabled}
                draggable={enabled}
                title={kind.enabled ? `${kind.help} Click to add after the selected step, or drag onto the canvas.` : kind.disabled_reason}
                data-testid={`palette-${kind.type}`}
                onDragStart={(event) => {
                  event.dataTransfer.setData(DRAG_TYPE, kind.type);
                  event.dataTransfer.effectAllowed = "move";
                }}
                onClick={() => onAdd(kind.type)}
              >
                <span>{kind.label}</span>
                {!kind.enabled && <small className="disabled-reason">{kind.disabled_reason}</small>}
              </button>
            );
          })}
        </div>
      ))}
    </aside>
  );
}

function ErrorList({ errors, onPick }) {
  if (!errors.length) return null;
  return (
    <div className="error-list" data-testid="error-list">
      <strong>
        {errors.length} problem{errors.length === 1 ? "" : "s"} to fix
      </strong>
      <ul>
        {errors.map((error, i) => (
          <li key={i}>
            <button type="button" data-testid="error-item" onClick={() => onPick(error.node)}>
              <code>{error.path}</code>: {error.message}
            </button>
          </li>
        ))}
      </ul>
    </div>
  );
}

export default function App({ boot }) {
  const api = useMemo(() => makeApi(boot), [boot]);
  const slug = boot.slug;
  const readOnly = !boot.canChange;
  const flow = useReactFlow();

  const [catalog, setCatalog] = useState(null);
  const [server, setServer] = useState(null);
  const [doc, setDoc] = useState(null);
  const [savedJson, setSavedJson] = useState("");
  const [selected, setSelected] = useState(null); // a node id, TRIGGER_ID, or null
  const [selectedEdge, setSelectedEdge] = useState(null);
  const [errors, setErrors] = useState([]);
  const [sizes, setSizes] = useState({});
  const [counts, setCounts] = useState(null);
  const [showCounts, setShowCounts] = useState(false);
  const [countsTick, setCountsTick] = useState(0); // bumped to refresh the counts now
  const [backtest, setBacktest] = useState(null);
  const [dialog, setDialog] = useState(null); // {kind: "publish"|"backtest"|"customers", ...}
  const [dialogError, setDialogError] = useState("");
  const [busy, setBusy] = useState("");
  const [toast, setToast] = useState(null);
  const [loadError, setLoadError] = useState("");
  const toastTimer = useRef(null);

  const dirty = doc !== null && JSON.stringify(doc) !== savedJson;

  const say = useCallback((text, kind = "ok") => {
    setToast({ text, kind });
    clearTimeout(toastTimer.current);
    toastTimer.current = setTimeout(() => setToast(null), kind === "error" ? 9000 : 4000);
  }, []);

  const adopt = useCallback((state) => {
    setServer(state);
    if (state.draft) {
      setDoc(state.draft);
      setSavedJson(JSON.stringify(state.draft));
    }
  }, []);

  useEffect(() => {
    Promise.all([api.catalog(), api.load(slug)])
      .then(([cat, state]) => {
        setCatalog(cat);
        adopt(state);
        setShowCounts(state.journey.live_version !== null);
      })
      .catch((exc) => setLoadError(exc.message));
  }, [api, slug, adopt]);

  useEffect(() => {
    const warn = (event) => {
      if (!dirty) return;
      event.preventDefault();
      event.returnValue = "";
    };
    window.addEventListener("beforeunload", warn);
    return () => window.removeEventListener("beforeunload", warn);
  }, [dirty]);

  // Live counts, refreshed while shown.
  useEffect(() => {
    if (!showCounts) return undefined;
    let live = true;
    const load = () =>
      api
        .counts(slug)
        .then((data) => live && setCounts(data))
        .catch((exc) => live && say(`Counts: ${exc.message}`, "error"));
    load();
    const timer = setInterval(load, COUNTS_EVERY_MS);
    return () => {
      live = false;
      clearInterval(timer);
    };
  }, [api, slug, showCounts, countsTick, say]);

  const fallback = useMemo(() => (doc ? layout(doc) : {}), [doc]);

  const errorsByNode = useMemo(() => {
    const map = new Map();
    for (const error of errors) {
      const key = error.node ?? TRIGGER_ID;
      if (!map.has(key)) map.set(key, []);
      map.get(key).push(error);
    }
    return map;
  }, [errors]);

  const openCustomers = useCallback((node, metric) => setDialog({ kind: "customers", node, metric }), []);

  // Select a node (or the trigger) and bring it into view.
  const focusNode = useCallback(
    (id) => {
      setSelected(id);
      const found = flow.getNode(id);
      if (found) {
        const width = found.measured?.width || 250;
        const height = found.measured?.height || 100;
        flow.setCenter(found.position.x + width / 2, found.position.y + height / 2, {
          zoom: flow.getZoom(),
          duration: 200,
        });
      }
    },
    [flow],
  );
  const pickErrors = useCallback((node) => focusNode(node ?? TRIGGER_ID), [focusNode]);

  const kinds = useMemo(() => new Map((catalog?.node_kinds || []).map((k) => [k.type, k])), [catalog]);

  const rfNodes = useMemo(() => {
    if (!doc) return [];
    const nodes = [
      {
        id: TRIGGER_ID,
        type: "trigger",
        position: triggerPosition(doc, fallback),
        draggable: false,
        deletable: false,
        selected: selected === TRIGGER_ID,
        measured: sizes[TRIGGER_ID],
        data: {
          trigger: doc.trigger,
          errors: errorsByNode.get(TRIGGER_ID),
          onErrors: pickErrors,
          readOnly,
          totals: showCounts ? counts?.totals : null,
          countedAt: showCounts && counts?.cached ? new Date(counts.as_of).toLocaleTimeString() : "",
        },
      },
    ];
    for (const node of doc.nodes || []) {
      nodes.push({
        id: node.id,
        type: "journey",
        position: positionOf(node, fallback[node.id]),
        selected: selected === node.id,
        draggable: !readOnly,
        deletable: !readOnly,
        measured: sizes[node.id],
        data: {
          node,
          kind: kinds.get(node.type),
          errors: errorsByNode.get(node.id),
          counts: showCounts && counts ? counts.nodes[node.id] || {} : null,
          backtest: backtest ? backtest.nodes[node.id] || { entered: 0, outcomes: {} } : null,
          onCount: openCustomers,
          onErrors: pickErrors,
          readOnly,
          isStart: doc.start === node.id,
        },
      });
    }
    return nodes;
  }, [doc, fallback, selected, sizes, errorsByNode, kinds, showCounts, counts, backtest, readOnly, openCustomers, pickErrors]);

  const rfEdges = useMemo(
    () => (doc ? edgesOf(doc).map((e) => ({ ...e, selected: e.id === selectedEdge, type: "smoothstep" })) : []),
    [doc, selectedEdge],
  );

  const edit = useCallback((change) => setDoc((current) => change(current)), []);

  const onNodesChange = useCallback(
    (changes) => {
      const measured = {};
      const removed = [];
      for (const change of changes) {
        if (change.type === "dimensions" && change.dimensions) measured[change.id] = change.dimensions;
        else if (change.type === "select") {
          if (change.selected) setSelected(change.id);
          else setSelected((current) => (current === change.id ? null : current));
        } else if (change.type === "position" && change.position && change.id !== TRIGGER_ID && !readOnly) {
          const { x, y } = change.position;
          edit((d) => ({
            ...d,
            nodes: d.nodes.map((n) =>
              n.id === change.id ? { ...n, ui: { ...(n.ui || {}), x: Math.round(x), y: Math.round(y) } } : n,
            ),
          }));
        } else if (change.type === "remove" && change.id !== TRIGGER_ID && !readOnly) {
          removed.push(change.id);
        }
      }
      if (Object.keys(measured).length) setSizes((s) => ({ ...s, ...measured }));
      if (removed.length) {
        edit((d) => removeNodes(d, removed));
        setSelected(null);
      }
    },
    [edit, readOnly],
  );

  const onEdgesChange = useCallback(
    (changes) => {
      for (const change of changes) {
        if (change.type === "select") setSelectedEdge(change.selected ? change.id : null);
        else if (change.type === "remove" && !readOnly) {
          edit((d) => disconnect(d, change.id));
          setSelectedEdge(null);
        }
      }
    },
    [edit, readOnly],
  );

  const onConnect = useCallback(
    ({ source, sourceHandle, target }) => {
      if (readOnly || !target || target === TRIGGER_ID) return;
      edit((d) => connect(d, source, sourceHandle, target));
    },
    [edit, readOnly],
  );

  const addNode = useCallback(
    (type, at) => {
      if (readOnly || !doc) return;
      const kind = kinds.get(type);
      if (!kind?.enabled) return;
      const id = freshId(doc, type);
      let position = at;
      const anchorId = selected && (selected === TRIGGER_ID || doc.nodes.some((n) => n.id === selected)) ? selected : null;
      if (!position) {
        if (anchorId === TRIGGER_ID) position = triggerPosition(doc, fallback);
        else if (anchorId) position = positionOf(doc.nodes.find((n) => n.id === anchorId), fallback[anchorId]);
        if (position) position = { x: position.x, y: position.y + 150 };
        else {
          const bottom = Math.max(0, ...doc.nodes.map((n) => positionOf(n, fallback[n.id]).y));
          position = { x: 0, y: bottom + 150 };
        }
      }
      if (!at) {
        // Not on top of another card: step right until the place is free.
        const taken = doc.nodes.map((n) => positionOf(n, fallback[n.id]));
        while (taken.some((p) => Math.abs(p.x - position.x) < 240 && Math.abs(p.y - position.y) < 110)) {
          position = { x: position.x + 280, y: position.y };
        }
      }
      const node = { id, type, ...structuredClone(kind.blank), ui: { x: Math.round(position.x), y: Math.round(position.y) } };
      // Added after the selected step: into its free output, or between it
      // and the step it leads to (a step with one output, or the trigger).
      const ownOutput = outputsOf(node)[0]?.handle;
      edit((d) => {
        let next = { ...d, nodes: [...d.nodes, node] };
        if (!at && anchorId === TRIGGER_ID) {
          if (d.start && ownOutput) next = connect(next, id, ownOutput, d.start);
          if (!d.start || ownOutput) next = { ...next, start: id };
        } else if (!at && anchorId) {
          const anchor = d.nodes.find((n) => n.id === anchorId);
          const handle = freeOutput(anchor);
          const outputs = outputsOf(anchor);
          if (handle) next = connect(next, anchorId, handle, id);
          else if (outputs.length === 1 && ownOutput) {
            next = connect(next, id, ownOutput, outputs[0].target);
            next = connect(next, anchorId, outputs[0].handle, id);
          }
        }
        if (!next.start) next = { ...next, start: id };
        return next;
      });
      setSelected(id);
      // Keep the new step in view (the zoom as the marketer left it).
      requestAnimationFrame(() =>
        flow.setCenter(position.x + 125, position.y + 50, { zoom: flow.getZoom(), duration: 200 }),
      );
    },
    [doc, kinds, selected, fallback, edit, readOnly, flow],
  );

  const onDrop = useCallback(
    (event) => {
      const type = event.dataTransfer.getData(DRAG_TYPE);
      if (!type) return;
      event.preventDefault();
      addNode(type, flow.screenToFlowPosition({ x: event.clientX, y: event.clientY }));
    },
    [addNode, flow],
  );

  // --- server actions ----------------------------------------------------------------------

  const fileToSave = () => withPositions(doc, fallback);

  const save = async ({ quiet = false } = {}) => {
    setBusy("save");
    try {
      const state = await api.saveDraft(slug, fileToSave());
      adopt(state);
      setErrors([]);
      if (!quiet) say("Draft saved.");
      return true;
    } catch (exc) {
      setErrors(exc.errors || []);
      say(`Not saved: ${exc.message}`, "error");
      return false;
    } finally {
      setBusy("");
    }
  };

  const validate = async () => {
    setBusy("validate");
    try {
      const result = await api.validate(slug, fileToSave());
      setErrors(result.errors);
      say(result.valid ? "The journey is valid." : `${result.errors.length} problem(s) found.`, result.valid ? "ok" : "error");
    } catch (exc) {
      say(exc.message, "error");
    } finally {
      setBusy("");
    }
  };

  const openPublish = async () => {
    if (dirty && !(await save({ quiet: true }))) return;
    try {
      adopt(await api.load(slug)); // where customers are right now
      setDialogError("");
      setDialog({ kind: "publish" });
    } catch (exc) {
      say(exc.message, "error");
    }
  };

  const publish = async (body) => {
    setBusy("publish");
    try {
      const state = await api.publish(slug, body);
      adopt(state);
      setDialog(null);
      setErrors([]);
      setShowCounts(true);
      setCountsTick((t) => t + 1);
      const { version, migrated } = state.published;
      say(`Version ${version} is live${body.in_flight === "migrate" ? `; ${migrated} enrollment(s) moved to it` : ""}.`);
    } catch (exc) {
      setDialogError(exc.message);
      setErrors(exc.errors || []);
    } finally {
      setBusy("");
    }
  };

  const setStatus = async (action) => {
    setBusy(action);
    try {
      const state = await (action === "pause" ? api.pause(slug) : api.resume(slug));
      setServer(state);
      setCountsTick((t) => t + 1);
      say(action === "pause" ? "Paused: nothing advances, no one enters." : "Resumed: overdue steps catch up.");
    } catch (exc) {
      say(exc.message, "error");
    } finally {
      setBusy("");
    }
  };

  const runBacktest = async ({ days, draft }) => {
    if (draft && dirty && !(await save({ quiet: true }))) {
      setDialogError("The draft has problems: fix them (see the canvas) before backtesting it.");
      return;
    }
    setBusy("backtest");
    setDialogError("");
    try {
      const result = await api.backtest(slug, { days, draft });
      setBacktest(result);
      setDialog(null);
      say(`Backtest: ${result.entered} entered, ${result.converted} converted.`);
    } catch (exc) {
      setDialogError(exc.message);
    } finally {
      setBusy("");
    }
  };

  // --- render --------------------------------------------------------------------------------

  if (loadError) return <div className="load-error" data-testid="load-error">Could not load the journey: {loadError}</div>;
  if (!catalog || !server || !doc) return <div className="loading">Loading the journey…</div>;

  const journey = server.journey;
  const selectedNode = doc.nodes.find((n) => n.id === selected);
  const settingsErrors = errorsByNode.get(TRIGGER_ID) || [];

  return (
    <div className="builder" data-testid="builder">
      <header className="toolbar">
        <a href={boot.listUrl} className="back" title="All journeys">
          ←
        </a>
        <strong className="journey-name" data-testid="journey-name">
          {doc.name || journey.name}
        </strong>
        <span className={`status status-${journey.status}`} data-testid="journey-status">
          {journey.status_label}
        </span>
        <span className="help" data-testid="journey-version">
          {journey.live_version ? `live v${journey.live_version}` : "never published"}
          {server.draft_is_live ? "" : journey.live_version ? " · draft differs" : ""}
        </span>
        <button
          type="button"
          data-testid="btn-settings"
          title="The trigger, re-entry, goal and holdout (selects the trigger)"
          onClick={() => focusNode(TRIGGER_ID)}
        >
          Settings
        </button>
        {dirty && (
          <span className="dirty" data-testid="dirty-indicator">
            unsaved changes
          </span>
        )}
        {readOnly && (
          <span className="read-only" data-testid="read-only-badge">
            read only
          </span>
        )}
        <span className="spacer" />
        {!readOnly && (
          <>
            <button type="button" data-testid="btn-save" disabled={!!busy} onClick={() => save()}>
              {busy === "save" ? "Saving…" : "Save draft"}
            </button>
            <button type="button" data-testid="btn-validate" disabled={!!busy} onClick={validate}>
              Validate
            </button>
            <button
              type="button"
              className="primary"
              data-testid="btn-publish"
              disabled={!!busy || journey.status === "archived"}
              onClick={openPublish}
            >
              Publish…
            </button>
            {journey.status === "live" && (
              <button type="button" data-testid="btn-pause" disabled={!!busy} onClick={() => setStatus("pause")}>
                Pause
              </button>
            )}
            {journey.status === "paused" && (
              <button type="button" data-testid="btn-resume" disabled={!!busy} onClick={() => setStatus("resume")}>
                Resume
              </button>
            )}
            <button
              type="button"
              data-testid="btn-backtest"
              disabled={!!busy}
              onClick={() => {
                setDialogError("");
                setDialog({ kind: "backtest" });
              }}
            >
              Backtest…
            </button>
          </>
        )}
        <label className="toggle" title="Live counts per node, refreshed every 15 seconds">
          <input
            type="checkbox"
            checked={showCounts}
            data-testid="btn-live-counts"
            onChange={(e) => setShowCounts(e.target.checked)}
          />
          Live counts
        </label>
        <a href={boot.adminUrl} className="admin-link">
          Admin
        </a>
      </header>
      <div className="workspace">
        <Palette kinds={catalog.node_kinds} readOnly={readOnly} onAdd={(type) => addNode(type)} />
        <div className="canvas" data-testid="canvas" onDragOver={(e) => e.preventDefault()} onDrop={onDrop}>
          <ReactFlow
            nodes={rfNodes}
            edges={rfEdges}
            nodeTypes={nodeTypes}
            onNodesChange={onNodesChange}
            onEdgesChange={onEdgesChange}
            onConnect={onConnect}
            onPaneClick={() => {
              setSelected(null);
              setSelectedEdge(null);
            }}
            nodesConnectable={!readOnly}
            nodesDraggable={!readOnly}
            deleteKeyCode={readOnly ? null : ["Delete", "Backspace"]}
            fitView
            fitViewOptions={{ padding: 0.2, maxZoom: 1 }}
            minZoom={0.2}
            proOptions={{ hideAttribution: false }}
          >
            <Background gap={16} />
            <Controls />
            <MiniMap pannable zoomable />
          </ReactFlow>
          {toast && (
            <div className={`toast toast-${toast.kind}`} data-testid="toast" role="status">
              {toast.text}
            </div>
          )}
        </div>
        <aside className="side-panel">
          <ErrorList errors={errors} onPick={pickErrors} />
          {backtest && <BacktestSummary result={backtest} onClear={() => setBacktest(null)} />}
          {selectedNode ? (
            <NodePanel
              key={selectedNode.id}
              api={api}
              catalog={catalog}
              node={selectedNode}
              nodeIds={doc.nodes.map((n) => n.id)}
              errors={errorsByNode.get(selectedNode.id) || []}
              onConnect={(handle, target) => edit((d) => connect(d, selectedNode.id, handle, target))}
              readOnly={readOnly}
              onChange={(node) => edit((d) => replaceNode(d, selectedNode.id, node))}
              onRename={(from, to) => {
                const problem = checkNodeId(doc, from, to);
                if (problem) return problem;
                edit((d) => renameNode(d, from, to));
                setErrors((list) => list.map((e) => (e.node === from ? { ...e, node: to } : e)));
                setSelected(to);
                return "";
              }}
              onDelete={(id) => {
                edit((d) => removeNodes(d, [id]));
                setSelected(null);
              }}
            />
          ) : (
            <SettingsPanel
              api={api}
              catalog={catalog}
              doc={doc}
              errors={settingsErrors}
              readOnly={readOnly}
              onChange={(next) => edit(() => next)}
            />
          )}
        </aside>
      </div>
      <datalist id="known-events">
        {catalog.events.map((name) => (
          <option key={name} value={name} />
        ))}
      </datalist>
      {dialog?.kind === "publish" && (
        <PublishDialog
          state={server}
          draftNodeIds={doc.nodes.map((n) => n.id)}
          busy={busy === "publish"}
          error={dialogError}
          onPublish={publish}
          onClose={() => setDialog(null)}
        />
      )}
      {dialog?.kind === "backtest" && (
        <BacktestDialog
          hasLive={journey.live_version !== null}
          dirty={dirty}
          busy={busy === "backtest"}
          error={dialogError}
          onRun={runBacktest}
          onClose={() => setDialog(null)}
        />
      )}
      {dialog?.kind === "customers" && (
        <CustomersDialog api={api} slug={slug} node={dialog.node} metric={dialog.metric} onClose={() => setDialog(null)} />
      )}
    </div>
  );
}
