import { useEffect, useState } from "react";
import { ConditionEditor, DurationField, JsonField, toNumber } from "./editors.jsx";
import { NODE_ID_RE, outputsOf } from "./graph.js";

function Field({ label, help, children, error }) {
  return (
    <div className="field">
      <label>{label}</label>
      {children}
      {help && <div className="help">{help}</div>}
      {error && <div className="field-error">{error}</div>}
    </div>
  );
}

function errorFor(errors, field) {
  return (errors || [])
    .filter((e) => e.field === field || e.field.startsWith(`${field}.`) || e.field.startsWith(`${field}[`))
    .map((e) => e.message)
    .join("; ");
}

function without(object, key) {
  const copy = { ...object };
  delete copy[key];
  return copy;
}

// --- template preview ---------------------------------------------------------------------

function TemplatePreview({ api, template }) {
  const [customer, setCustomer] = useState("");
  const [state, setState] = useState({ loading: false, data: null, error: "" });
  const load = async () => {
    setState({ loading: true, data: null, error: "" });
    try {
      setState({ loading: false, data: await api.preview(template, customer.trim()), error: "" });
    } catch (exc) {
      setState({ loading: false, data: null, error: exc.message });
    }
  };
  useEffect(() => {
    setState({ loading: false, data: null, error: "" });
    if (template) load();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [template]);
  if (!template) return null;
  const data = state.data;
  return (
    <div className="preview" data-testid="template-preview">
      <div className="row">
        <input
          placeholder="Preview as (external id, email or phone)"
          value={customer}
          data-testid="field-preview-customer"
          onChange={(event) => setCustomer(event.target.value)}
        />
        <button type="button" onClick={load} data-testid="btn-preview">
          Preview
        </button>
      </div>
      {state.loading && <div className="help">Rendering…</div>}
      {state.error && (
        <div className="field-error" data-testid="preview-error">
          {state.error}
        </div>
      )}
      {data && (
        <>
          <div className="help">
            As {data.customer.external_id}
            {data.customer.email ? ` (${data.customer.email})` : ""} ·{" "}
            <a href={data.template.admin_url} target="_blank" rel="noreferrer">
              edit the template
            </a>
          </div>
          {data.error && (
            <div className="field-error" data-testid="preview-render-error">
              {data.error}
            </div>
          )}
          {data.problems?.length > 0 && (
            <ul className="field-error">
              {data.problems.map((p) => (
                <li key={p}>{p}</li>
              ))}
            </ul>
          )}
          {data.email && (
            <div className="email-preview">
              <div data-testid="preview-subject">
                <strong>Subject:</strong> {data.email.subject}
              </div>
              {data.email.preheader && <div className="help">{data.email.preheader}</div>}
              <iframe
                title="Rendered email"
                sandbox=""
                srcDoc={data.email.html}
                data-testid="preview-html"
              />
            </div>
          )}
          {data.sms && (
            <div className="sms-preview">
              <div className="bubble" data-testid="preview-sms">
                {data.sms.body}
              </div>
              <div className="help">{data.sms.label}</div>
              {data.sms.warning && <div className="field-error">{data.sms.warning}</div>}
            </div>
          )}
        </>
      )}
    </div>
  );
}

// --- the survey picker ---------------------------------------------------------------------

const CHANNELS = [
  ["email", "email"],
  ["sms", "SMS"],
];

// An nps_survey node's survey and channel. The catalog lists each survey with
// the template it sends by channel: a channel it has no template for is not
// offered (the validator would refuse it), picking a survey moves the node to
// a channel the survey has, and the preview shows the template the customer
// would get (with the survey's score links).
function SurveyFields({ api, node, catalog, errors, disabled, onChange }) {
  const surveys = catalog.surveys || [];
  const survey = surveys.find((s) => s.slug === node.survey);
  const channel = node.channel || "email";
  const has = (s, c) => Boolean(s?.templates?.[c]);
  const pick = (slug) => {
    const chosen = surveys.find((s) => s.slug === slug);
    const keep = !chosen || has(chosen, channel);
    const next = keep ? channel : CHANNELS.map(([c]) => c).find((c) => has(chosen, c)) || channel;
    onChange({ ...node, survey: slug, channel: next });
  };
  const channelsOf = (s) =>
    CHANNELS.filter(([c]) => has(s, c))
      .map(([, label]) => label)
      .join(", ") || "no templates";
  let surveyHelp = null;
  if (survey) {
    surveyHelp = (
      <a href={survey.admin_url} target="_blank" rel="noreferrer" data-testid="survey-admin-link">
        edit the survey
      </a>
    );
  } else if (!surveys.length) {
    surveyHelp = "No surveys yet: add one in the admin (NPS surveys).";
  }
  return (
    <>
      <Field label="Survey" help={surveyHelp} error={errorFor(errors, "survey")}>
        <select
          value={node.survey || ""}
          disabled={disabled}
          data-testid="field-survey"
          onChange={(event) => pick(event.target.value)}
        >
          <option value="">— choose a survey —</option>
          {surveys.map((s) => (
            <option key={s.slug} value={s.slug}>
              {s.name} ({s.slug}; {channelsOf(s)})
            </option>
          ))}
          {node.survey && !survey && <option value={node.survey}>{node.survey} (not found)</option>}
        </select>
      </Field>
      <Field
        label="Channel"
        help="Email carries the eleven score links; SMS asks for a reply from 0 to 10."
        error={
          errorFor(errors, "channel") ||
          (survey && !has(survey, channel)
            ? `this survey has no ${channel === "sms" ? "SMS" : "email"} template`
            : "")
        }
      >
        <select
          value={channel}
          disabled={disabled}
          data-testid="field-channel"
          onChange={(event) => onChange({ ...node, channel: event.target.value })}
        >
          {CHANNELS.map(([c, label]) => (
            <option key={c} value={c} disabled={Boolean(survey) && !has(survey, c) && c !== channel}>
              {label}
              {survey && !has(survey, c) ? " (no template in this survey)" : ""}
            </option>
          ))}
        </select>
      </Field>
      <TemplatePreview api={api} template={survey?.templates?.[channel] || ""} />
    </>
  );
}

// --- the selected node ------------------------------------------------------------------------

// Where each output leads: the same edit as drawing the edge on the canvas,
// from the keyboard.
function Outputs({ node, nodeIds, errors, disabled, onConnect }) {
  const outputs = outputsOf(node);
  if (!outputs.length) return null;
  const label = (out) =>
    out.handle === "next" ? "Then" : out.handle === "yes" ? "If yes" : out.handle === "no" ? "If no" : `Branch ${Number(out.handle.slice(1)) + 1} (${out.label})`;
  const field = (out) => (out.handle.startsWith("b") ? `branches[${out.handle.slice(1)}].next` : out.handle);
  return (
    <fieldset>
      <legend>Next steps</legend>
      {outputs.map((out) => (
        <Field key={out.handle} label={label(out)} error={errorFor(errors, field(out))}>
          <select
            value={out.target || ""}
            disabled={disabled}
            data-testid={`field-output-${out.handle}`}
            onChange={(event) => onConnect(out.handle, event.target.value || null)}
          >
            <option value="">— end the journey here —</option>
            {nodeIds
              .filter((id) => id !== node.id || ["wait", "wait_until", "wait_for_event"].includes(node.type))
              .map((id) => (
                <option key={id} value={id}>
                  {id}
                </option>
              ))}
          </select>
        </Field>
      ))}
    </fieldset>
  );
}

export function NodePanel({ api, catalog, node, nodeIds, errors, readOnly, onChange, onConnect, onRename, onDelete }) {
  const [idText, setIdText] = useState(node.id);
  const [idError, setIdError] = useState("");
  useEffect(() => {
    setIdText(node.id);
    setIdError("");
  }, [node.id]);
  const kind = catalog.node_kinds.find((k) => k.type === node.type);
  const set = (key, value) => onChange(value === undefined ? without(node, key) : { ...node, [key]: value });
  const commitId = () => {
    const next = idText.trim();
    if (next === node.id) return;
    const message = onRename(node.id, next);
    setIdError(message || "");
    if (message) return;
  };
  const templates = catalog.templates.filter((t) => t.channel === node.type);
  const dis = readOnly;

  return (
    <div className="panel-body" data-testid="node-panel">
      <h2>
        {kind?.label || node.type} <span className="help">{kind?.help}</span>
      </h2>
      {errors.length > 0 && (
        <ul className="node-errors" data-testid="node-errors">
          {errors.map((e, i) => (
            <li key={i}>
              <code>{e.field || "node"}</code>: {e.message}
            </li>
          ))}
        </ul>
      )}
      <Field label="Node id" help="Names this step in edges, reports and messages." error={idError}>
        <input
          value={idText}
          disabled={dis}
          data-testid="field-id"
          onChange={(event) => setIdText(event.target.value)}
          onBlur={commitId}
          onKeyDown={(event) => event.key === "Enter" && commitId()}
        />
      </Field>

      {(node.type === "email" || node.type === "sms") && (
        <>
          <Field label="Template" error={errorFor(errors, "template")}>
            <select
              value={node.template || ""}
              disabled={dis}
              data-testid="field-template"
              onChange={(event) => set("template", event.target.value)}
            >
              <option value="">— choose {node.type === "email" ? "an email" : "an SMS"} template —</option>
              {templates.map((t) => (
                <option key={t.slug} value={t.slug}>
                  {t.name} ({t.slug}
                  {t.category === "transactional" ? ", transactional" : ""})
                </option>
              ))}
              {node.template && !templates.some((t) => t.slug === node.template) && (
                <option value={node.template}>{node.template} (not found)</option>
              )}
            </select>
          </Field>
          <Field
            label="Over a frequency cap"
            help="Skip the message, or defer it until the cap allows."
            error={errorFor(errors, "over_cap")}
          >
            <select
              value={node.over_cap || ""}
              disabled={dis}
              data-testid="field-over_cap"
              onChange={(event) => set("over_cap", event.target.value || undefined)}
            >
              <option value="">skip (default)</option>
              <option value="skip">skip</option>
              <option value="defer">defer</option>
            </select>
          </Field>
          <TemplatePreview api={api} template={node.template} />
        </>
      )}

      {node.type === "nps_survey" && (
        <SurveyFields api={api} node={node} catalog={catalog} errors={errors} disabled={dis} onChange={onChange} />
      )}

      {node.type === "wait" && (
        <Field label="Wait for" error={errorFor(errors, "duration")}>
          <DurationField
            value={node.duration}
            disabled={dis}
            testid="field-duration"
            onChange={(v) => set("duration", v)}
          />
        </Field>
      )}

      {node.type === "wait_until" && (
        <>
          <Field label="Time of day (customer's zone)" error={errorFor(errors, "time")}>
            <input
              type="time"
              value={node.time || ""}
              disabled={dis}
              data-testid="field-time"
              onChange={(event) => set("time", event.target.value)}
            />
          </Field>
          <Field label="On these days (none: any day)" error={errorFor(errors, "weekdays")}>
            <div className="weekdays">
              {catalog.weekdays.map((day) => {
                const days = node.weekdays || [];
                const on = days.includes(day);
                return (
                  <label key={day}>
                    <input
                      type="checkbox"
                      checked={on}
                      disabled={dis}
                      data-testid={`field-weekday-${day}`}
                      onChange={() => {
                        const next = on
                          ? days.filter((d) => d !== day)
                          : catalog.weekdays.filter((d) => d === day || days.includes(d));
                        set("weekdays", next.length ? next : undefined);
                      }}
                    />
                    {day}
                  </label>
                );
              })}
            </div>
          </Field>
        </>
      )}

      {node.type === "wait_for_event" && (
        <>
          <Field label="Event" help="Yes if it arrives before the timeout." error={errorFor(errors, "event")}>
            <input
              list="known-events"
              value={node.event || ""}
              disabled={dis}
              data-testid="field-event"
              onChange={(event) => set("event", event.target.value)}
            />
          </Field>
          <Field label="Timeout" error={errorFor(errors, "timeout")}>
            <DurationField
              value={node.timeout}
              disabled={dis}
              testid="field-timeout"
              onChange={(v) => set("timeout", v)}
            />
          </Field>
          <Field
            label="Only events whose properties equal (optional)"
            help='e.g. {"plan": "pro"}'
            error={errorFor(errors, "where")}
          >
            <JsonField
              value={node.where}
              allowEmpty
              emptyValue={undefined}
              disabled={dis}
              testid="field-where"
              rows={3}
              onChange={(v) => set("where", v)}
            />
          </Field>
        </>
      )}

      {node.type === "branch" && (
        <Field label="Condition (yes when it holds)" error={errorFor(errors, "condition")}>
          <ConditionEditor
            api={api}
            value={node.condition}
            examples={catalog.condition_examples}
            disabled={dis}
            testid="field-condition"
            onChange={(v) => set("condition", v)}
          />
        </Field>
      )}

      {node.type === "split" && (
        <Field label="Branches (relative weights)" error={errorFor(errors, "branches")}>
          <ol className="branches">
            {(node.branches || []).map((branch, i) => (
              <li key={i}>
                weight{" "}
                <input
                  type="number"
                  min="1"
                  value={branch.weight ?? ""}
                  disabled={dis}
                  data-testid={`field-branch-${i}-weight`}
                  onChange={(event) =>
                    set(
                      "branches",
                      node.branches.map((b, j) => (j === i ? { ...b, weight: toNumber(event.target.value) } : b)),
                    )
                  }
                />{" "}
                → {branch.next || "(connect it)"}
                {!dis && (node.branches || []).length > 2 && (
                  <button
                    type="button"
                    data-testid={`btn-remove-branch-${i}`}
                    onClick={() => set("branches", node.branches.filter((_, j) => j !== i))}
                  >
                    Remove
                  </button>
                )}
              </li>
            ))}
          </ol>
          {!dis && (
            <button
              type="button"
              data-testid="btn-add-branch"
              onClick={() => set("branches", [...(node.branches || []), { weight: 1 }])}
            >
              Add a branch
            </button>
          )}
        </Field>
      )}

      {node.type === "update_traits" && (
        <Field label="Traits to set (null removes one)" error={errorFor(errors, "traits")}>
          <JsonField
            value={node.traits}
            disabled={dis}
            testid="field-traits"
            onChange={(v) => set("traits", v)}
          />
        </Field>
      )}

      {node.type === "webhook" && (
        <>
          <Field label="URL" error={errorFor(errors, "url")}>
            <input
              type="url"
              value={node.url || ""}
              disabled={dis}
              data-testid="field-url"
              onChange={(event) => set("url", event.target.value)}
            />
          </Field>
          <Field
            label="Signing secret (its name in the settings)"
            help="Leave empty for an unsigned call."
            error={errorFor(errors, "secret")}
          >
            <input
              value={node.secret || ""}
              disabled={dis}
              data-testid="field-secret"
              onChange={(event) => set("secret", event.target.value || undefined)}
            />
          </Field>
          <Field label="If it keeps failing" error={errorFor(errors, "on_failure")}>
            <select
              value={node.on_failure || "continue"}
              disabled={dis}
              data-testid="field-on_failure"
              onChange={(event) => set("on_failure", event.target.value)}
            >
              <option value="continue">continue to the next step</option>
              <option value="fail">fail the enrollment</option>
            </select>
          </Field>
        </>
      )}

      <Outputs node={node} nodeIds={nodeIds} errors={errors} disabled={dis} onConnect={onConnect} />

      {!dis && (
        <button type="button" className="danger" data-testid="btn-delete-node" onClick={() => onDelete(node.id)}>
          Delete this node
        </button>
      )}
    </div>
  );
}

export function checkNodeId(doc, from, to) {
  if (!NODE_ID_RE.test(to)) return "Use 1-100 letters, digits, _ or -.";
  if (to !== from && doc.nodes.some((n) => n.id === to)) return `A node ${to} exists already.`;
  return "";
}

// --- the journey's settings ---------------------------------------------------------------------

export function SettingsPanel({ api, catalog, doc, errors, readOnly, onChange }) {
  const set = (key, value) => onChange(value === undefined ? without(doc, key) : { ...doc, [key]: value });
  const trigger = doc.trigger || {};
  const setTrigger = (key, value) => set("trigger", value === undefined ? without(trigger, key) : { ...trigger, [key]: value });
  const reentry = typeof doc.reentry === "string" ? { policy: doc.reentry } : doc.reentry || { policy: "never" };
  const dis = readOnly;
  const segmentPicker = (
    <Field label="Segment" error={errorFor(errors, "trigger.segment")}>
      <select
        value={trigger.segment || ""}
        disabled={dis}
        data-testid="field-trigger-segment"
        onChange={(event) => setTrigger("segment", event.target.value)}
      >
        <option value="">— choose a segment —</option>
        {catalog.segments.map((s) => (
          <option key={s.slug} value={s.slug}>
            {s.name} ({s.slug}
            {s.is_active ? "" : ", inactive"})
          </option>
        ))}
      </select>
    </Field>
  );
  return (
    <div className="panel-body" data-testid="settings-panel">
      <h2>Journey settings</h2>
      {errors.length > 0 && (
        <ul className="node-errors" data-testid="settings-errors">
          {errors.map((e, i) => (
            <li key={i}>
              <code>{e.path}</code>: {e.message}
            </li>
          ))}
        </ul>
      )}
      <Field label="Name" error={errorFor(errors, "name")}>
        <input value={doc.name || ""} disabled={dis} data-testid="field-name" onChange={(e) => set("name", e.target.value)} />
      </Field>
      <Field label="Description">
        <textarea
          rows={2}
          value={doc.description || ""}
          disabled={dis}
          data-testid="field-description"
          onChange={(e) => set("description", e.target.value || undefined)}
        />
      </Field>
      <fieldset>
        <legend>Trigger</legend>
        <Field label="Starts when" error={errorFor(errors, "trigger.type")}>
          <select
            value={trigger.type || ""}
            disabled={dis}
            data-testid="field-trigger-type"
            onChange={(event) => {
              const spec = catalog.triggers.find((t) => t.type === event.target.value);
              set("trigger", { type: event.target.value, ...(spec?.blank || {}) });
            }}
          >
            {catalog.triggers.map((t) => (
              <option key={t.type} value={t.type}>
                {t.label}
              </option>
            ))}
          </select>
        </Field>
        {trigger.type === "event" && (
          <>
            <Field label="Event" error={errorFor(errors, "trigger.event")}>
              <input
                list="known-events"
                value={trigger.event || ""}
                disabled={dis}
                data-testid="field-trigger-event"
                onChange={(e) => setTrigger("event", e.target.value)}
              />
            </Field>
            <Field label="Only events whose properties equal (optional)" error={errorFor(errors, "trigger.where")}>
              <JsonField
                value={trigger.where}
                allowEmpty
                emptyValue={undefined}
                disabled={dis}
                rows={3}
                testid="field-trigger-where"
                onChange={(v) => setTrigger("where", v)}
              />
            </Field>
          </>
        )}
        {(trigger.type === "segment_entered" || trigger.type === "segment_exited") && segmentPicker}
        {trigger.type === "date_trait" && (
          <>
            <Field label="Date trait" error={errorFor(errors, "trigger.trait")}>
              <input value={trigger.trait || ""} disabled={dis} data-testid="field-trigger-trait" onChange={(e) => setTrigger("trait", e.target.value)} />
            </Field>
            <Field label="Days from it (negative: before)" error={errorFor(errors, "trigger.offset_days")}>
              <input
                type="number"
                value={trigger.offset_days ?? ""}
                disabled={dis}
                data-testid="field-trigger-offset_days"
                onChange={(e) => setTrigger("offset_days", toNumber(e.target.value))}
              />
            </Field>
            <Field label="At (customer's zone)" error={errorFor(errors, "trigger.at")}>
              <input type="time" value={trigger.at || ""} disabled={dis} data-testid="field-trigger-at" onChange={(e) => setTrigger("at", e.target.value || undefined)} />
            </Field>
          </>
        )}
        {trigger.type === "schedule" && (
          <>
            <Field label="Cron (five fields, UTC)" error={errorFor(errors, "trigger.cron")}>
              <input value={trigger.cron || ""} disabled={dis} data-testid="field-trigger-cron" onChange={(e) => setTrigger("cron", e.target.value)} />
            </Field>
            {segmentPicker}
          </>
        )}
      </fieldset>
      <Field label="Starts at" help="The first step after the trigger." error={errorFor(errors, "start")}>
        <select value={doc.start || ""} disabled={dis} data-testid="field-start" onChange={(e) => set("start", e.target.value)}>
          <option value="">— choose the first step —</option>
          {(doc.nodes || []).map((n) => (
            <option key={n.id} value={n.id}>
              {n.id}
            </option>
          ))}
        </select>
      </Field>
      <fieldset>
        <legend>Re-entry</legend>
        <Field label="May a customer enter again?" error={errorFor(errors, "reentry")}>
          <select
            value={reentry.policy}
            disabled={dis}
            data-testid="field-reentry-policy"
            onChange={(e) =>
              set("reentry", e.target.value === "after" ? { policy: "after", days: reentry.days || 30 } : { policy: e.target.value })
            }
          >
            <option value="never">never</option>
            <option value="always">always (once the last enrollment ended)</option>
            <option value="after">after some days</option>
          </select>
        </Field>
        {reentry.policy === "after" && (
          <Field label="Days since the last entry">
            <input
              type="number"
              min="1"
              value={reentry.days ?? ""}
              disabled={dis}
              data-testid="field-reentry-days"
              onChange={(e) => set("reentry", { policy: "after", days: toNumber(e.target.value) })}
            />
          </Field>
        )}
      </fieldset>
      <fieldset>
        <legend>Goal</legend>
        <label className="check">
          <input
            type="checkbox"
            checked={!!doc.goal}
            disabled={dis}
            data-testid="field-goal-enabled"
            onChange={(e) => set("goal", e.target.checked ? { event: "activated", op: "since_enrolled" } : undefined)}
          />
          Customers who meet a goal leave the journey as converted
        </label>
        {doc.goal && (
          <Field label="Goal condition" error={errorFor(errors, "goal")}>
            <ConditionEditor
              api={api}
              value={doc.goal}
              examples={catalog.condition_examples}
              disabled={dis}
              testid="field-goal"
              onChange={(v) => set("goal", v)}
            />
          </Field>
        )}
        <label className="check">
          <input
            type="checkbox"
            checked={!!doc.exit_on_segment_exit}
            disabled={dis}
            data-testid="field-exit_on_segment_exit"
            onChange={(e) => set("exit_on_segment_exit", e.target.checked || undefined)}
          />
          Exit when the customer leaves the trigger's segment
        </label>
        {errorFor(errors, "exit_on_segment_exit") && <div className="field-error">{errorFor(errors, "exit_on_segment_exit")}</div>}
      </fieldset>
      <fieldset>
        <legend>Holdout</legend>
        <Field
          label="Hold out this % of entrants (they receive nothing; measures lift)"
          error={errorFor(errors, "holdout_percent")}
        >
          <input
            type="number"
            min="0"
            max="100"
            value={doc.holdout_percent ?? 0}
            disabled={dis}
            data-testid="field-holdout_percent"
            onChange={(e) => set("holdout_percent", toNumber(e.target.value) ?? 0)}
          />
        </Field>
      </fieldset>
    </div>
  );
}
