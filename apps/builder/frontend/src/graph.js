// The journey file <-> the canvas. The journey file (DESIGN.md) is the one
// source of truth: the canvas's nodes and edges are derived from it on every
// render, and every gesture (drag, connect, delete) is an edit of the file.
// Positions live in each node's `ui` {x, y}, which the engine ignores.

export const TRIGGER_ID = "__trigger__";
export const NODE_ID_RE = /^[A-Za-z0-9_-]{1,100}$/;
const COLUMN = 280;
const ROW = 150;

// The outgoing edges of a node: [{handle, target, label}] in field order.
export function outputsOf(node) {
  switch (node.type) {
    case "exit":
      return [];
    case "branch":
    case "wait_for_event":
      return [
        { handle: "yes", target: node.yes ?? null, label: "yes" },
        { handle: "no", target: node.no ?? null, label: "no" },
      ];
    case "split": {
      const branches = Array.isArray(node.branches) ? node.branches : [];
      const total = branches.reduce((sum, b) => sum + (Number(b.weight) > 0 ? Number(b.weight) : 0), 0);
      return branches.map((b, i) => ({
        handle: `b${i}`,
        target: b.next ?? null,
        label: total > 0 ? `${Math.round((100 * (Number(b.weight) || 0)) / total)}%` : `branch ${i + 1}`,
      }));
    }
    default:
      return [{ handle: "next", target: node.next ?? null, label: "" }];
  }
}

// A copy of `node` with the output `handle` pointing at `target` (null: unset).
export function setOutput(node, handle, target) {
  const copy = { ...node };
  if (handle === "next" || handle === "yes" || handle === "no") {
    if (target) copy[handle] = target;
    else delete copy[handle];
    return copy;
  }
  const match = /^b(\d+)$/.exec(handle);
  if (match && Array.isArray(node.branches)) {
    const index = Number(match[1]);
    copy.branches = node.branches.map((b, i) => {
      if (i !== index) return b;
      const branch = { ...b };
      if (target) branch.next = target;
      else delete branch.next;
      return branch;
    });
  }
  return copy;
}

// Node positions for nodes without `ui`: layers by distance from the start.
export function layout(doc) {
  const nodes = doc.nodes || [];
  const byId = new Map(nodes.map((n) => [n.id, n]));
  const depth = new Map();
  const queue = [];
  if (doc.start && byId.has(doc.start)) {
    depth.set(doc.start, 0);
    queue.push(doc.start);
  }
  while (queue.length) {
    const id = queue.shift();
    for (const out of outputsOf(byId.get(id))) {
      if (out.target && byId.has(out.target) && !depth.has(out.target)) {
        depth.set(out.target, depth.get(id) + 1);
        queue.push(out.target);
      }
    }
  }
  let deepest = Math.max(0, ...depth.values());
  for (const n of nodes) if (!depth.has(n.id)) depth.set(n.id, ++deepest);
  const perLayer = new Map();
  const positions = {};
  for (const n of nodes) {
    const d = depth.get(n.id);
    const index = perLayer.get(d) || 0;
    perLayer.set(d, index + 1);
    positions[n.id] = { x: index * COLUMN, y: (d + 1) * ROW };
  }
  return positions;
}

export function positionOf(node, fallback) {
  const ui = node.ui;
  if (ui && typeof ui.x === "number" && typeof ui.y === "number") return { x: ui.x, y: ui.y };
  return fallback || { x: 0, y: ROW };
}

export function triggerPosition(doc, fallbackPositions) {
  const start = (doc.nodes || []).find((n) => n.id === doc.start);
  const at = start ? positionOf(start, fallbackPositions[start.id]) : { x: 0, y: ROW };
  return { x: at.x, y: at.y - ROW };
}

export function edgesOf(doc) {
  const ids = new Set((doc.nodes || []).map((n) => n.id));
  const edges = [];
  if (doc.start && ids.has(doc.start)) {
    edges.push({
      id: `${TRIGGER_ID}::start`,
      source: TRIGGER_ID,
      sourceHandle: "start",
      target: doc.start,
      targetHandle: "in",
      deletable: false,
    });
  }
  for (const node of doc.nodes || []) {
    for (const out of outputsOf(node)) {
      if (!out.target || !ids.has(out.target)) continue;
      edges.push({
        id: `${node.id}::${out.handle}`,
        source: node.id,
        sourceHandle: out.handle,
        target: out.target,
        targetHandle: "in",
        label: out.label || undefined,
        data: { handle: out.handle },
        className: out.handle === "yes" ? "edge-yes" : out.handle === "no" ? "edge-no" : "",
      });
    }
  }
  return edges;
}

// A node id not yet used: `email-1`, `email-2`, ...
export function freshId(doc, type) {
  const used = new Set((doc.nodes || []).map((n) => n.id));
  for (let i = 1; ; i++) {
    const id = `${type.replace(/_/g, "-")}-${i}`;
    if (!used.has(id)) return id;
  }
}

export function connect(doc, source, handle, target) {
  if (source === TRIGGER_ID) return { ...doc, start: target };
  return {
    ...doc,
    nodes: doc.nodes.map((n) => (n.id === source ? setOutput(n, handle, target) : n)),
  };
}

export function disconnect(doc, edgeId) {
  const [source, handle] = edgeId.split("::");
  if (source === TRIGGER_ID) return doc; // the start edge goes by pointing it elsewhere
  return connect(doc, source, handle, null);
}

// Remove nodes and every edge into them (the start too, if it was one).
export function removeNodes(doc, ids) {
  const gone = new Set(ids);
  const nodes = doc.nodes
    .filter((n) => !gone.has(n.id))
    .map((n) => {
      let copy = n;
      for (const out of outputsOf(n)) {
        if (out.target && gone.has(out.target)) copy = setOutput(copy, out.handle, null);
      }
      return copy;
    });
  return { ...doc, nodes, start: gone.has(doc.start) ? "" : doc.start };
}

// Rename a node and every reference to it.
export function renameNode(doc, from, to) {
  const nodes = doc.nodes.map((n) => {
    let copy = n.id === from ? { ...n, id: to } : n;
    for (const out of outputsOf(copy)) {
      if (out.target === from) copy = setOutput(copy, out.handle, to);
    }
    return copy;
  });
  return { ...doc, nodes, start: doc.start === from ? to : doc.start };
}

export function replaceNode(doc, id, node) {
  return { ...doc, nodes: doc.nodes.map((n) => (n.id === id ? node : n)) };
}

// The first output of `node` that leads nowhere yet (for "add after").
export function freeOutput(node) {
  return outputsOf(node).find((out) => !out.target)?.handle ?? null;
}

// The file as it is saved: nodes keep their positions, rounded.
export function withPositions(doc, positions) {
  return {
    ...doc,
    nodes: doc.nodes.map((n) => {
      const at = positions[n.id];
      if (!at || (n.ui && typeof n.ui.x === "number")) return n;
      return { ...n, ui: { ...(n.ui || {}), x: Math.round(at.x), y: Math.round(at.y) } };
    }),
  };
}

// A short line saying what a node does, for its card on the canvas.
export function summary(node) {
  const d = (duration) => {
    if (!duration || typeof duration !== "object") return "?";
    const parts = [];
    for (const unit of ["days", "hours", "minutes"]) {
      const n = duration[unit];
      if (n) parts.push(`${n} ${n === 1 ? unit.slice(0, -1) : unit}`);
    }
    return parts.join(" ") || "?";
  };
  switch (node.type) {
    case "email":
    case "sms":
      return node.template ? `template ${node.template}` : "choose a template";
    case "nps_survey":
      return node.survey ? `survey ${node.survey} by ${node.channel || "email"}` : "choose a survey";
    case "wait":
      return `wait ${d(node.duration)}`;
    case "wait_until":
      return `until ${node.time || "?"}${node.weekdays?.length ? ` on ${node.weekdays.join(", ")}` : ""}`;
    case "wait_for_event":
      return `${node.event || "?"} within ${d(node.timeout)}`;
    case "branch":
      return describeCondition(node.condition);
    case "split":
      return `${(node.branches || []).length} branches by weight`;
    case "update_traits":
      return Object.keys(node.traits || {}).join(", ") || "no traits";
    case "webhook":
      return node.url || "no URL";
    case "exit":
      return "leaves the journey";
    default:
      return "";
  }
}

export function describeCondition(c) {
  if (!c || typeof c !== "object") return "no condition";
  if (Array.isArray(c.all)) return c.all.map(describeCondition).join(" and ");
  if (Array.isArray(c.any)) return c.any.map(describeCondition).join(" or ");
  if (c.not) return `not (${describeCondition(c.not)})`;
  if (c.trait) return `${c.trait} ${c.op}${c.value !== undefined ? ` ${JSON.stringify(c.value)}` : ""}${c.days ? ` ${c.days}d` : ""}`;
  if (c.event) return `${c.event} ${c.op}${c.value !== undefined ? ` ${c.value}` : ""}${c.days ? ` ${c.days}d` : ""}`;
  if (c.segment) return `in segment ${c.segment}`;
  if (c.nps) return `NPS ${c.nps}`;
  return "condition";
}
