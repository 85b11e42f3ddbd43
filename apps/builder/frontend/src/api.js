// The builder API (/builder/api/): JSON in and out, the CSRF token on writes.
// A refusal throws an ApiError carrying the server's `error` and `errors`
// (each {path, message, node, field}), so the canvas can show them on nodes.

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.error || `request failed (${status})`);
    this.status = status;
    this.errors = body?.errors || [];
  }
}

export function makeApi({ api, csrfToken }) {
  async function call(method, path, body) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (method !== "GET") headers["X-CSRFToken"] = csrfToken;
    const response = await fetch(api + path, {
      method,
      headers,
      credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = { error: `the server answered ${response.status} without JSON` };
    }
    if (!response.ok) throw new ApiError(response.status, data);
    return data;
  }
  const j = (slug) => `journeys/${encodeURIComponent(slug)}`;
  return {
    catalog: () => call("GET", "catalog"),
    load: (slug) => call("GET", j(slug)),
    saveDraft: (slug, doc) => call("PUT", `${j(slug)}/draft`, doc),
    validate: (slug, doc) => call("POST", `${j(slug)}/validate`, doc),
    publish: (slug, body) => call("POST", `${j(slug)}/publish`, body),
    pause: (slug) => call("POST", `${j(slug)}/pause`),
    resume: (slug) => call("POST", `${j(slug)}/resume`),
    backtest: (slug, body) => call("POST", `${j(slug)}/backtest`, body),
    counts: (slug) => call("GET", `${j(slug)}/counts`),
    customers: (slug, node, metric) =>
      call("GET", `${j(slug)}/nodes/${encodeURIComponent(node)}/customers?metric=${metric}`),
    preview: (template, customer) =>
      call(
        "GET",
        `templates/${encodeURIComponent(template)}/preview` +
          (customer ? `?customer=${encodeURIComponent(customer)}` : ""),
      ),
    checkCondition: (condition, context = "journey") =>
      call("POST", "conditions/check", { condition, context }),
  };
}
