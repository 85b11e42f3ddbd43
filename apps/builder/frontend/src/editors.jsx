import { useEffect, useRef, useState } from "react";

// A JSON editor for a free-form value (a condition, traits, a `where`): the
// text is the marketer's; the value changes only when the text parses, and a
// syntax error says where it is.
// Conditions read best in the order the segment editor shows them (stored
// files sort keys alphabetically): combinators, the subject, then the test.
const KEY_ORDER = ["all", "any", "not", "trait", "event", "segment", "nps", "op", "value", "percent"];

export function readable(node) {
  if (Array.isArray(node)) return node.map(readable);
  if (node && typeof node === "object") {
    const rank = (k) => (KEY_ORDER.includes(k) ? KEY_ORDER.indexOf(k) : KEY_ORDER.length);
    const keys = Object.keys(node).sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
    return Object.fromEntries(keys.map((k) => [k, readable(node[k])]));
  }
  return node;
}

export function JsonField({ value, onChange, testid, rows = 6, disabled, allowEmpty = false, emptyValue, format = (v) => v }) {
  const shown = (v) => (v === undefined || v === null ? "" : JSON.stringify(format(v), null, 2));
  const [text, setText] = useState(shown(value));
  const [error, setError] = useState("");
  const last = useRef(value);
  useEffect(() => {
    // Replaced from outside (an example, another node): show it.
    if (JSON.stringify(value) !== JSON.stringify(last.current)) {
      setText(shown(value));
      setError("");
      last.current = value;
    }
  }, [value]);
  const edit = (next) => {
    setText(next);
    if (!next.trim() && allowEmpty) {
      setError("");
      last.current = emptyValue;
      onChange(emptyValue);
      return;
    }
    try {
      const parsed = JSON.parse(next);
      setError("");
      last.current = parsed;
      onChange(parsed);
    } catch (exc) {
      setError(`Not valid JSON: ${exc.message}`);
    }
  };
  return (
    <div className="json-field">
      <textarea
        rows={rows}
        spellCheck={false}
        value={text}
        disabled={disabled}
        data-testid={testid}
        onChange={(event) => edit(event.target.value)}
      />
      {error && (
        <div className="field-error" data-testid={`${testid}-json-error`}>
          {error}
        </div>
      )}
    </div>
  );
}

// Conditions as the segment editor writes them: JSON, checked by the server
// (the same rules as saving), with the segment editor's example library.
export function ConditionEditor({ api, value, onChange, examples, testid, disabled, context = "journey" }) {
  const [check, setCheck] = useState(null);
  const [showExamples, setShowExamples] = useState(false);
  const run = async () => {
    try {
      const result = await api.checkCondition(value, context);
      setCheck(result);
    } catch (exc) {
      setCheck({ valid: false, error: exc.message });
    }
  };
  useEffect(() => setCheck(null), [value]);
  return (
    <div className="condition-editor">
      <JsonField value={value} onChange={onChange} testid={testid} rows={8} disabled={disabled} format={readable} />
      <div className="row">
        <button type="button" onClick={run} data-testid={`${testid}-check`}>
          Check condition
        </button>
        <button type="button" onClick={() => setShowExamples((s) => !s)} data-testid={`${testid}-examples-toggle`}>
          {showExamples ? "Hide examples" : "Examples"}
        </button>
      </div>
      {check && (
        <div
          className={check.valid ? "check-ok" : "field-error"}
          data-testid={`${testid}-status`}
        >
          {check.valid ? "The condition is valid." : check.error}
        </div>
      )}
      {showExamples && (
        <ul className="examples" data-testid={`${testid}-examples`}>
          {examples.map((example, i) => (
            <li key={example.title}>
              <button
                type="button"
                disabled={disabled}
                data-testid={`${testid}-example-${i}`}
                onClick={() => onChange(example.definition)}
              >
                {example.title}
              </button>
              <div className="help">{example.description}</div>
              <code>{JSON.stringify(example.definition)}</code>
            </li>
          ))}
        </ul>
      )}
    </div>
  );
}

// days / hours / minutes, kept as the file has them (zero units left out).
export function DurationField({ value, onChange, testid, disabled }) {
  const current = value && typeof value === "object" ? value : {};
  const set = (unit, raw) => {
    const next = { ...current };
    if (raw === "" || raw === "0") delete next[unit];
    else next[unit] = /^\d+$/.test(raw) ? Number(raw) : raw;
    onChange(next);
  };
  return (
    <div className="duration">
      {["days", "hours", "minutes"].map((unit) => (
        <label key={unit}>
          <input
            type="number"
            min="0"
            value={current[unit] ?? ""}
            disabled={disabled}
            data-testid={`${testid}-${unit}`}
            onChange={(event) => set(unit, event.target.value)}
          />
          {unit}
        </label>
      ))}
    </div>
  );
}

// A number input that keeps what does not parse as typed (the server names it).
export function toNumber(raw) {
  if (raw === "") return undefined;
  return /^-?\d+$/.test(raw) ? Number(raw) : raw;
}
