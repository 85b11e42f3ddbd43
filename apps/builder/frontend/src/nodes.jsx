import { Handle, Position } from "@xyflow/react";
import { outputsOf, summary } from "./graph.js";

// Symbols every common font has (the canvas is also screenshotted headless).
const ICONS = {
  email: "✉",
  sms: "✆",
  nps_survey: "★",
  wait: "◷",
  wait_until: "◶",
  wait_for_event: "◴",
  branch: "◇",
  split: "⋔",
  update_traits: "✎",
  webhook: "⇄",
  exit: "■",
};

const SEND_KINDS = new Set(["email", "sms", "nps_survey"]);
const compact = new Intl.NumberFormat(undefined, { notation: "compact", maximumFractionDigits: 1 });

// Short labels on the card; the full words are in COUNT_LABELS (tooltips, dialogs).
const SHORT_LABELS = {
  entered: "in",
  waiting: "here",
  sent: "sent",
  delivered: "dlvd",
  opened: "open",
  clicked: "click",
  converted: "conv",
};

export const COUNT_LABELS = {
  entered: "entered",
  waiting: "here now",
  sent: "sent",
  delivered: "delivered",
  opened: "opened",
  clicked: "clicked",
  converted: "converted",
};

function metricsFor(type) {
  const base = ["entered", "waiting"];
  if (SEND_KINDS.has(type)) base.push("sent", "delivered", "opened", "clicked");
  base.push("converted");
  return base;
}

function ErrorBadge({ id, errors, onClick }) {
  if (!errors?.length) return null;
  return (
    <button
      type="button"
      className="error-badge nodrag"
      data-testid={`error-badge-${id}`}
      title={errors.map((e) => `${e.field || e.path}: ${e.message}`).join("\n")}
      onClick={onClick}
    >
      {errors.length}
    </button>
  );
}

function LiveCounts({ id, type, counts, onCount }) {
  if (!counts) return null;
  return (
    <div className="counts" data-testid={`counts-${id}`}>
      {metricsFor(type).map((metric) => (
        <button
          key={metric}
          type="button"
          className={`count nodrag count-${metric}`}
          data-testid={`count-${id}-${metric}`}
          data-count={counts[metric] || 0}
          title={`${(counts[metric] || 0).toLocaleString()} ${COUNT_LABELS[metric]}: click for the customers`}
          onClick={(event) => {
            event.stopPropagation();
            onCount(id, metric);
          }}
        >
          <strong>{compact.format(counts[metric] || 0)}</strong>
          <span>{SHORT_LABELS[metric]}</span>
        </button>
      ))}
    </div>
  );
}

function BacktestCounts({ id, result }) {
  if (!result) return null;
  const outcomes = Object.entries(result.outcomes || {});
  const words = outcomes.map(([outcome, n]) => `${outcome} ${n}`).join(" · ");
  return (
    <div
      className="backtest-counts"
      data-testid={`backtest-${id}`}
      data-entered={result.entered}
      title={`Backtest: ${result.entered} entered${words ? `; ${words}` : ""}`}
    >
      backtest: <strong>{result.entered.toLocaleString()}</strong> in
      {outcomes.length > 0 && <span className="outcomes"> · {words}</span>}
    </div>
  );
}

export function JourneyNode({ id, data, selected }) {
  const { node, kind, errors, counts, backtest, onCount, onErrors, readOnly, isStart } = data;
  const outputs = outputsOf(node);
  return (
    <div
      className={`journey-node kind-${node.type}${selected ? " selected" : ""}${errors?.length ? " has-errors" : ""}`}
      data-testid={`node-${id}`}
      data-node-type={node.type}
    >
      <Handle
        type="target"
        position={Position.Top}
        id="in"
        isConnectable={!readOnly}
        data-testid={`handle-${id}-in`}
      />
      <div className="node-head" data-testid={`node-head-${id}`}>
        <span className="node-icon" aria-hidden="true">
          {ICONS[node.type] || "•"}
        </span>
        <span className="node-kind">{kind?.label || node.type}</span>
        <span className="node-id" data-testid={`node-id-${id}`} title={id}>
          {id}
        </span>
        {isStart && <span className="start-tag">start</span>}
        <ErrorBadge id={id} errors={errors} onClick={() => onErrors(id)} />
      </div>
      <div className="node-summary">{summary(node)}</div>
      <LiveCounts id={id} type={node.type} counts={counts} onCount={onCount} />
      <BacktestCounts id={id} result={backtest} />
      {outputs.length > 0 && (
        <div className="handle-labels">
          {outputs.map((out) => (
            <span key={out.handle}>{out.label}</span>
          ))}
        </div>
      )}
      {outputs.map((out, i) => (
        <Handle
          key={out.handle}
          type="source"
          position={Position.Bottom}
          id={out.handle}
          isConnectable={!readOnly}
          className={`out-${out.handle.startsWith("b") ? "branch" : out.handle}`}
          style={{ left: `${((i + 1) * 100) / (outputs.length + 1)}%` }}
          data-testid={`handle-${id}-${out.handle}`}
        />
      ))}
    </div>
  );
}

const TRIGGER_WORDS = {
  event: (t) => `event ${t.event || "?"}`,
  segment_entered: (t) => `entered segment ${t.segment || "?"}`,
  segment_exited: (t) => `left segment ${t.segment || "?"}`,
  date_trait: (t) => `${t.offset_days ?? 0} days from ${t.trait || "?"} at ${t.at || "09:00"}`,
  schedule: (t) => `cron ${t.cron || "?"} for ${t.segment || "?"}`,
};

export function TriggerNode({ data, selected }) {
  const { trigger, errors, onErrors, readOnly, totals, countedAt } = data;
  const words = TRIGGER_WORDS[trigger?.type]?.(trigger) || "choose a trigger";
  return (
    <div
      className={`journey-node trigger-node${selected ? " selected" : ""}${errors?.length ? " has-errors" : ""}`}
      data-testid="node-trigger"
    >
      <div className="node-head">
        <span className="node-icon" aria-hidden="true">
          ▶
        </span>
        <span className="node-kind">Trigger</span>
        <ErrorBadge id="trigger" errors={errors} onClick={() => onErrors(null)} />
      </div>
      <div className="node-summary">{words}</div>
      {totals && (
        <div className="totals" data-testid="journey-totals">
          {totals.enrolled.toLocaleString()} enrolled · {totals.active.toLocaleString()} active ·{" "}
          {totals.converted.toLocaleString()} converted
          {countedAt && <span title="Counts of a big journey are cached briefly"> · as of {countedAt}</span>}
        </div>
      )}
      <Handle
        type="source"
        position={Position.Bottom}
        id="start"
        isConnectable={!readOnly}
        data-testid="handle-trigger-start"
      />
    </div>
  );
}

export const nodeTypes = { journey: JourneyNode, trigger: TriggerNode };
