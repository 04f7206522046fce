// Gatehouse console: one page, plain JavaScript, the REST API as its only back end (docs/console.md).
// Every value from the server goes into the page as text (h() below), never as HTML.

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const statusBox = document.getElementById("status");
const alertBox = document.getElementById("alert");
let leave = []; // what the current page stops when another one opens (live streams)

// --- DOM ---------------------------------------------------------------------------------------
function h(tag, attrs = {}, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const kid of kids.flat()) {
    if (kid === null || kid === undefined || kid === false) continue;
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}
let uid = 0;
function field(labelText, attrs = {}) {
  const id = `f${++uid}`;
  const input = attrs.options
    ? h("select", { id, name: attrs.name, required: attrs.required },
        attrs.options.map(([v, t]) => h("option", { value: v, selected: v === attrs.value }, t)))
    : h(attrs.multiline ? "textarea" : "input", { id, type: attrs.type || "text", ...attrs, options: null, multiline: null });
  if (attrs.multiline && attrs.value) input.value = attrs.value;
  return h("label", { for: id }, labelText, input);
}
function form(fields, submitText, onsubmit, cls) {
  const f = h("form", { class: cls }, fields, h("button", { type: "submit" }, submitText));
  f.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const button = f.querySelector("button[type=submit]");
    button.disabled = true;
    try { await onsubmit(Object.fromEntries(new FormData(f)), f); } catch (err) { showError(err); } finally { button.disabled = false; }
  });
  return f;
}
function table(columns, rows, empty = "Nothing yet.") {
  if (!rows.length) return h("p", { class: "muted" }, empty);
  return h("div", { class: "table" }, h("table", {},
    h("thead", {}, h("tr", {}, columns.map(([title]) => h("th", { scope: "col" }, title)))),
    h("tbody", {}, rows.map((row) => h("tr", { "data-id": row.id ?? row.req_id ?? "" },
      columns.map(([, cell, cls]) => h("td", { class: cls }, cell(row))))))));
}
function button(text, onclick, cls = "secondary", attrs = {}) {
  return h("button", { type: "button", class: cls, ...attrs, onclick: async (ev) => {
    ev.target.disabled = true;
    try { await onclick(); } catch (err) { showError(err); } finally { ev.target.disabled = false; }
  } }, text);
}
function when(iso) { return iso ? new Date(iso).toLocaleString() : "never"; }
function json(value) { return h("pre", {}, JSON.stringify(value, null, 1)); }
function badge(online) { return h("span", { class: `badge ${online ? "online" : "offline"}` }, online ? "online" : "offline"); }
function state(s) { return h("span", { class: `st-${s}` }, s); }
let generation = 0; // counts page changes: a page still loading when the user moved on is stale
const STALE = new Error("stale page");
function render(gen, title, ...kids) {
  if (gen !== generation) throw STALE;
  main.replaceChildren(h("h1", {}, title), ...kids);
  document.title = `${title} · Gatehouse console`;
}
function notice(text) { alertBox.replaceChildren(); statusBox.textContent = text; }
function showError(err) {
  if (err === STALE) return;
  statusBox.textContent = "";
  const lines = (err.fields || []).map((e) => h("li", {}, `${e.field}: ${e.message}`));
  alertBox.replaceChildren(h("strong", {}, err.message || String(err)), ...(lines.length ? [h("ul", {}, lines)] : []));
}
function clearMessages() { statusBox.textContent = ""; alertBox.replaceChildren(); }

// --- the API -----------------------------------------------------------------------------------
class ApiError extends Error {
  constructor(status, body) {
    const detail = body && body.detail ? body.detail : `the server answered ${status}`;
    super(`${detail}${body && body.code ? ` (${body.code})` : ""}`);
    this.status = status; this.code = body && body.code; this.body = body || {};
    this.fields = (body && body.errors) || [];
  }
}
const session = {
  get access() { return sessionStorage.getItem("gh.access"); },
  get refresh() { return sessionStorage.getItem("gh.refresh"); },
  get me() { return JSON.parse(sessionStorage.getItem("gh.me") || "null"); },
  keep(tokens) { sessionStorage.setItem("gh.access", tokens.access_token); sessionStorage.setItem("gh.refresh", tokens.refresh_token); },
  clear() { sessionStorage.clear(); },
};
let refreshing = null;
async function refreshTokens() {
  if (!session.refresh) return false;
  refreshing = refreshing || fetch("/auth/refresh", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ refresh_token: session.refresh }),
  }).then(async (r) => { if (!r.ok) return false; session.keep(await r.json()); return true; }).finally(() => { refreshing = null; });
  return refreshing;
}
async function api(method, path, body, retry = true) {
  const headers = { Accept: "application/json" };
  if (session.access) headers.Authorization = `Bearer ${session.access}`;
  const init = { method, headers };
  if (body instanceof FormData) init.body = body;
  else if (body !== undefined) { headers["Content-Type"] = "application/json"; init.body = JSON.stringify(body); }
  let resp;
  try { resp = await fetch(path, init); } catch { throw new ApiError(0, { detail: "the server cannot be reached" }); }
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = { detail: text.slice(0, 200) }; }
  if (resp.status === 401 && retry && path !== "/auth/login" && (await refreshTokens())) return api(method, path, body, false);
  if (resp.status === 401 && path !== "/auth/login") { session.clear(); location.hash = "#/login"; }
  if (!resp.ok) throw new ApiError(resp.status, data);
  return data;
}
function qs(params) {
  const q = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== "" && v !== null && v !== undefined));
  return q.toString() ? `?${q}` : "";
}

// Live updates: GET /console/events read with fetch (it sends the Authorization header), events
// parsed as they come. Reconnects after a dropped stream, an `end` (fresh token first) or a 5xx,
// waiting longer each time (1 s to 30 s); a 4xx other than 401 is shown and ends it.
function live(gen, query, onEvent) {
  if (gen !== generation) throw STALE;
  const ctl = new AbortController();
  let stopped = false;
  async function run() {
    let wait = 1000;
    while (!stopped) {
      let reader = null;
      try {
        const resp = await fetch(`/console/events${qs(query)}`, { headers: { Authorization: `Bearer ${session.access}` }, signal: ctl.signal });
        if (resp.status === 401) { if (!(await refreshTokens())) { location.hash = "#/login"; return; } continue; }
        if (resp.status >= 400 && resp.status < 500) { showError(new ApiError(resp.status, await resp.json().catch(() => null))); return; }
        if (resp.ok) {
          reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
          let buffer = "";
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            wait = 1000; // it works again
            buffer += value;
            let cut;
            while ((cut = buffer.indexOf("\n\n")) >= 0) {
              const block = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
              const name = (block.match(/^event: (.*)$/m) || [])[1];
              const data = (block.match(/^data: (.*)$/m) || [])[1];
              if (name === "end") await refreshTokens();
              else if (name && data && !stopped) onEvent(name, JSON.parse(data));
            }
          }
        }
      } catch { if (stopped) return; } finally { if (reader) reader.cancel().catch(() => {}); }
      await new Promise((r) => setTimeout(r, wait));
      wait = Math.min(wait * 2, 30000);
    }
  }
  run();
  leave.push(() => { stopped = true; ctl.abort(); });
}

// --- pages -------------------------------------------------------------------------------------
const pages = [
  ["devices", "Devices", () => true],
  ["users", "Users", () => true],
  ["gateway-lite", "Gateway Lite", () => true],
  ["locks", "Locks", () => true],
  ["admin", "Admin", (me) => me.account_type === "gooee"],
  ["profile", "Profile", () => true],
];
function drawNav(current) {
  const me = session.me;
  if (!me) { nav.replaceChildren(); return; }
  nav.replaceChildren(...pages.filter(([, , show]) => show(me)).map(([id, title]) =>
    h("a", { href: `#/${id}`, "aria-current": current === id ? "page" : null }, title)),
  h("button", { type: "button", onclick: logout }, `Log out ${me.username}`));
}
async function logout() {
  try { await api("POST", "/auth/logout", { refresh_token: session.refresh || "-" }); } catch { /* logged out anyway */ }
  session.clear(); location.hash = "#/login";
}

function loginPage() {
  const gen = generation;
  let needCode = false;
  const codeSlot = h("div");
  const f = form([field("Email", { name: "username", type: "email", autocomplete: "username", required: true }),
    field("Password", { name: "password", type: "password", autocomplete: "current-password", required: true }), codeSlot],
  "Log in", async (data) => {
    const body = { username: data.username, password: data.password };
    if (needCode && data.code) body.two_factor_auth_code = data.code.trim();
    try {
      session.keep(await api("POST", "/auth/login", body));
    } catch (err) {
      if (err.code === "two_factor_required" && !needCode) {
        needCode = true;
        codeSlot.replaceChildren(field("Two-factor code", { name: "code", inputmode: "numeric", autocomplete: "one-time-code", pattern: "[0-9]{6}", required: true }));
        codeSlot.querySelector("input").focus();
        notice(err.body.method === "app" ? "Enter the code from your authenticator app." : `A code was sent by ${err.body.method}.`);
        return;
      }
      throw err;
    }
    sessionStorage.setItem("gh.me", JSON.stringify(await api("GET", "/me")));
    clearMessages();
    location.hash = "#/devices";
  }, "stack");
  render(gen, "Log in", f, h("p", { class: "muted" }, "The same account as the REST API and the mobile apps."));
  f.querySelector("input").focus();
}

async function devicesPage() {
  const gen = generation;
  const rows = new Map();
  const tbody = h("tbody");
  const list = h("div", { class: "table" }, h("table", {}, h("thead", {}, h("tr", {},
    ["Name", "Kind", "Username", "State", "Last seen"].map((t, i) => h("th", { scope: "col", class: i === 2 ? "hide-narrow" : null }, t)))), tbody));
  function upsert(d) {
    const tr = h("tr", { "data-id": d.id },
      h("td", {}, h("a", { href: `#/devices/${d.id}` }, d.name)), h("td", {}, d.kind),
      h("td", { class: "hide-narrow" }, d.username), h("td", { class: "state" }, badge(d.online)), h("td", { class: "seen" }, when(d.last_seen)));
    if (rows.has(d.id)) rows.get(d.id).replaceWith(tr); else tbody.append(tr);
    rows.set(d.id, tr);
  }
  const create = form([field("Name", { name: "name", required: true, maxlength: 200 }),
    field("Location", { name: "location", maxlength: 200 }),
    field("Kind", { name: "kind", options: [["esp32", "ESP32"], ["gateway_lite", "Gateway Lite"], ["lock_gateway", "Lock gateway"], ["mailbox", "Mailbox"]] })],
  "Create device", async (data) => {
    const d = await api("POST", "/gateway/devices", data);
    noticeNext(`Device ${d.name} created: issue its provisioning token on its page.`);
    location.hash = `#/devices/${d.id}`;
  });
  render(gen, "Devices", list, h("h2", {}, "New device"), create);
  for (const d of (await api("GET", "/gateway/devices")).results) upsert(d);
  live(gen, {}, (name, data) => {
    if (name === "device") upsert(data);
    if (name === "removed" && rows.has(data.id)) { rows.get(data.id).remove(); rows.delete(data.id); }
  });
}

const RANGES = [["15", "last 15 minutes"], ["60", "last hour"], ["1440", "last 24 hours"], ["10080", "last 7 days"]];
function numbers(payload, prefix = "") {
  const out = {};
  if (payload && typeof payload === "object") {
    for (const [k, v] of Object.entries(payload)) {
      if (typeof v === "number") out[prefix + k] = v;
      else if (v && typeof v === "object" && !Array.isArray(v)) Object.assign(out, numbers(v, `${prefix}${k}.`));
    }
  }
  return out;
}
function chart(points, label) {
  const svgNS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(svgNS, "svg");
  svg.setAttribute("class", "chart"); svg.setAttribute("viewBox", "0 0 600 200"); svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("role", "img"); svg.setAttribute("aria-label", `${label}: ${points.length} samples`);
  if (points.length) {
    const xs = points.map((p) => p[0]); const ys = points.map((p) => p[1]);
    const [x0, x1] = [Math.min(...xs), Math.max(...xs) || 1]; const [y0, y1] = [Math.min(...ys), Math.max(...ys)];
    const sx = (x) => 40 + ((x - x0) / (x1 - x0 || 1)) * 550; const sy = (y) => 185 - ((y - y0) / (y1 - y0 || 1)) * 170;
    const line = document.createElementNS(svgNS, "polyline");
    line.setAttribute("points", points.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(" "));
    svg.append(line);
    for (const [y, v] of [[15, y1], [190, y0]]) {
      const t = document.createElementNS(svgNS, "text"); t.setAttribute("x", "2"); t.setAttribute("y", y); t.textContent = String(v); svg.append(t);
    }
  }
  return svg;
}

async function devicePage(id) {
  const gen = generation;
  const device = await api("GET", `/gateway/devices/${id}`);
  const head = h("div");
  const latestBox = h("div", { class: "cards", "aria-live": "polite" });
  const chartBox = h("div");
  const commandsBox = h("div");
  const tokenBox = h("div");
  const claimsBox = h("div");
  const commands = new Map();
  let samples = []; // [time ms, payload], oldest first
  let metric = null;
  let range = "60";

  function drawHead(d) {
    head.replaceChildren(h("p", {}, badge(d.online), " ", h("span", { class: "muted" }, `${d.kind} · ${d.username} · last seen ${when(d.last_seen)}`),
      d.location ? ` · ${d.location}` : "", h("br"), h("span", { class: "muted" }, d.has_api_key ? "Has an API key." : "No API key yet: issue a token and claim it.")));
  }
  function drawLatest(payload, at) {
    const values = numbers(payload);
    latestBox.replaceChildren(...(Object.keys(values).length ? Object.entries(values).map(([k, v]) =>
      h("div", { class: "card", "data-metric": k }, h("div", { class: "muted" }, k), h("div", { class: "v" }, String(v)))) :
      [h("p", { class: "muted" }, payload === null || payload === undefined ? "No telemetry yet." : "The last sample has no numbers.")]),
    at ? h("p", { class: "muted" }, `received ${when(at)}`) : "");
  }
  function drawChart() {
    const keys = [...new Set(samples.flatMap(([, p]) => Object.keys(numbers(p))))].sort();
    if (!metric || !keys.includes(metric)) metric = keys[0] || null;
    const points = metric ? samples.map(([t, p]) => [t, numbers(p)[metric]]).filter(([, v]) => typeof v === "number") : [];
    const pick = field("Value", { options: keys.map((k) => [k, k]), value: metric });
    pick.querySelector("select").addEventListener("change", (ev) => { metric = ev.target.value; drawChart(); });
    const period = field("Range", { options: RANGES, value: range });
    period.querySelector("select").addEventListener("change", (ev) => { range = ev.target.value; loadHistory().catch(showError); });
    chartBox.replaceChildren(h("div", { class: "tabs" }, period, keys.length ? pick : ""),
      points.length ? chart(points, metric) : h("p", { class: "muted" }, "No samples in this range."));
  }
  async function loadHistory() {
    const since = new Date(Date.now() - Number(range) * 60000).toISOString();
    const page = await api("GET", `/gateway/devices/${id}/telemetry${qs({ since, limit: 1000 })}`);
    samples = page.results.map((s) => [Date.parse(s.received_at), s.payload]).reverse();
    drawChart();
  }
  function drawCommands() {
    const rows = [...commands.values()].sort((a, b) => b.created_at.localeCompare(a.created_at));
    commandsBox.replaceChildren(table([["Sent", (c) => when(c.created_at)], ["Command", (c) => json(c.command)],
      ["Status", (c) => state(c.status), "cmd-status"], ["Answer", (c) => (c.result ? json(c.result) : "")]], rows, "No commands sent."));
  }
  async function loadClaims() {
    const claims = await api("GET", `/gateway/devices/${id}/claims`);
    claimsBox.replaceChildren(table([["When", (c) => when(c.claimed_at)], ["Door", (c) => c.source], ["From", (c) => c.remote],
      ["Metadata", (c) => json(c.metadata)]], claims.results, "Never claimed."));
  }
  const issue = form([field("Notes", { name: "notes", maxlength: 500 }), field("Valid for (minutes, empty: no expiry)", { name: "lifetime_minutes", type: "number", min: 1 })],
    "Issue provisioning token", async (data) => {
      const body = { notes: data.notes };
      if (data.lifetime_minutes) body.lifetime_minutes = Number(data.lifetime_minutes);
      const t = await api("POST", `/gateway/devices/${id}/provision`, body);
      const code = h("code", { id: "token-value" }, t.token);
      tokenBox.replaceChildren(h("div", { class: "secret", role: "region", "aria-label": "New provisioning token" },
        h("strong", {}, "Provisioning token (shown once): "), code, " ",
        button("Copy token", async () => { await navigator.clipboard.writeText(t.token); notice("Token copied."); }),
        h("p", { class: "muted" }, `Expires ${t.expires_at ? when(t.expires_at) : "never"}. The firmware claims it at POST /gateway/devices/claim; scan the claim payload:`),
        h("img", { src: t.qr_code, alt: `QR code of the claim payload ${t.claim_payload}`, width: 200, height: 200 }),
        h("p", {}, h("code", {}, t.claim_payload), " ", button("Copy claim payload", async () => { await navigator.clipboard.writeText(t.claim_payload); notice("Claim payload copied."); }))));
      notice("Token issued: copy it now, it is not shown again.");
    });
  const revoke = button("Revoke API key", async () => {
    if (!confirm("Revoke this device's API key? It is disconnected until it claims a new token.")) return;
    await api("DELETE", `/gateway/devices/${id}/api_key`);
    notice("API key revoked: the device is disconnected. Issue a new token to replace the key.");
  }, "danger");
  const send = form([field("Command (JSON object)", { name: "command", multiline: true, required: true, value: '{"method": "setRelay", "params": {"on": true}}' }),
    field("Wait for the answer (seconds)", { name: "timeout", type: "number", min: 0, max: 30, value: "10" })],
  "Send command", async (data) => {
    let command;
    try { command = JSON.parse(data.command); } catch { throw new ApiError(400, { detail: "the command is not valid JSON" }); }
    const c = await api("POST", `/gateway/devices/${id}/commands`, { command, timeout: Number(data.timeout || 0) });
    commands.set(c.req_id, c); drawCommands();
    notice(`Command ${c.req_id}: ${c.status}`);
  });
  render(gen, device.name, head, h("h2", {}, "Latest values"), latestBox, h("h2", {}, "History"), chartBox,
    h("h2", {}, "Commands"), send, commandsBox, h("h2", {}, "Provisioning"), issue, tokenBox, h("p", {}, revoke),
    h("h3", {}, "Last 50 claims"), claimsBox,
    h("p", {}, button("Delete device", async () => {
      if (!confirm(`Delete ${device.name}?`)) return;
      await api("DELETE", `/gateway/devices/${id}`); location.hash = "#/devices";
    }, "danger")));
  drawHead(device);
  const latest = await api("GET", `/gateway/devices/${id}/telemetry/latest`);
  drawLatest(latest.payload, latest.received_at);
  await Promise.all([loadHistory(), loadClaims()]);
  let lastAt = latest.received_at;
  // A claim changes the key and the metadata, and drops the device's connection: read the claims
  // again then, not on every sample.
  const claimState = (d) => JSON.stringify([d.has_api_key, d.metadata, d.online]);
  let lastClaimState = claimState(device);
  live(gen, { device: id }, (name, data) => {
    if (name === "device") {
      drawHead(data);
      if (data.last_payload_at && (!lastAt || Date.parse(data.last_payload_at) > Date.parse(lastAt))) {
        lastAt = data.last_payload_at;
        drawLatest(data.last_payload, data.last_payload_at);
        const from = Date.now() - Number(range) * 60000;
        samples = [...samples.filter(([t]) => t >= from), [Date.parse(data.last_payload_at), data.last_payload]];
        drawChart();
      }
      if (claimState(data) !== lastClaimState) { lastClaimState = claimState(data); loadClaims().catch(showError); }
    }
    if (name === "command") { commands.set(data.req_id, data); drawCommands(); }
    if (name === "removed") { noticeNext("This device was deleted."); location.hash = "#/devices"; }
  });
}

async function adminPage(tab = "tokens") {
  const gen = generation;
  const tabs = { tokens: "Issued tokens", credentials: "Credentials", telemetry: "Telemetry samples" };
  const columns = {
    tokens: [["Device", (t) => `${t.device_name} (${t.device})`], ["Notes", (t) => t.notes], ["Issued", (t) => when(t.created)],
      ["Expires", (t) => (t.expires_at ? when(t.expires_at) : "never")], ["State", (t) => state(t.state)], ["Used", (t) => (t.used_at ? when(t.used_at) : "")]],
    credentials: [["Device", (c) => `${c.device_name} (${c.device})`], ["Kind", (c) => c.kind], ["Owner", (c) => c.owner],
      ["Issued", (c) => when(c.issued_at)], ["Last used", (c) => when(c.last_used)], ["State", (c) => badge(c.online)]],
    telemetry: [["Device", (s) => `${s.device_name} (${s.device})`], ["Received", (s) => when(s.received_at)], ["Door", (s) => s.source], ["Payload", (s) => json(s.payload)]],
  };
  const box = h("div");
  async function load(search) {
    const page = await api("GET", `/admin/${tab}${qs({ search, limit: 100 })}`);
    box.replaceChildren(table(columns[tab], page.results, "No matches."), page.next_cursor ? h("p", { class: "muted" }, "Showing the newest 100.") : "");
  }
  render(gen, "Admin", h("div", { class: "tabs", role: "tablist" }, Object.entries(tabs).map(([id, title]) =>
    h("button", { type: "button", role: "tab", "aria-selected": String(id === tab), onclick: () => adminPage(id).catch(showError) }, title))),
  h("p", { class: "muted" }, "Read only, across every tenant. Token values and keys are never shown."),
  form([field("Search device name or username", { name: "search", type: "search" })], "Search", (d) => load(d.search)), box);
  await load("");
}

async function usersPage() {
  const gen = generation;
  const me = session.me;
  const box = h("div");
  let search = "";
  async function load() {
    const users = await api("GET", `/users/${qs({ limit: 200, search })}`);
    box.replaceChildren(table([["User", (u) => u.username], ["Name", (u) => `${u.first_name} ${u.last_name}`.trim()],
      ["Type", (u) => u.account_type], ["Status", (u) => state(u.account_status)], ["Last login", (u) => when(u.last_login)],
      ["Actions", (u) => (u.id === me.id ? h("span", { class: "muted" }, "you") : u.account_status === "active"
        ? button("Deactivate", async () => { await api("POST", `/users/${u.id}/deactivate/`); notice(`${u.username} deactivated.`); await load(); }, "danger")
        : u.account_status === "inactive" ? button("Activate", async () => { await api("POST", `/users/${u.id}/activate/`); notice(`${u.username} activated.`); await load(); }) : ""), "actions"]],
    users.results, "No users in view."));
  }
  const types = me.account_type === "gooee" ? [["customer", "customer"], ["partner", "partner"], ["gooee", "gooee"]] : [[me.account_type, me.account_type]];
  const invite = form([field("Email", { name: "username", type: "email", required: true }), field("First name", { name: "first_name" }),
    field("Last name", { name: "last_name" }), field("Account type", { name: "account_type", options: types, value: me.account_type }),
    me.account_type === "gooee" ? field("Partner or customer id (for those types)", { name: "tenant" }) : ""],
  "Invite", async (data) => {
    const body = { username: data.username, account_type: data.account_type };
    if (data.first_name) body.first_name = data.first_name;
    if (data.last_name) body.last_name = data.last_name;
    if (me.account_type !== "gooee") { if (me.partner) body.partner = me.partner; if (me.customer) body.customer = me.customer; }
    else if (data.tenant && data.account_type !== "gooee") body[data.account_type] = data.tenant;
    const u = await api("POST", "/users/?portal=true", body);
    notice(`Invitation mailed to ${u.username}.`); await load();
  });
  const tenants = h("div");
  const find = form([field("Search users", { name: "search", type: "search" })], "Search", async (d) => { search = d.search; await load(); });
  render(gen, "Users", find, box, h("h2", {}, "Invite a user"), invite, tenants);
  await load();
  for (const [path, title] of [["/partners/", "Partners"], ["/customers/", "Customers"]]) {
    const page = await api("GET", `${path}?limit=200`).catch(() => null);
    if (!page || !page.results.length) continue;
    tenants.append(h("h2", {}, title), table([["Name", (t) => t.name], ["Id", (t) => h("code", {}, t.id)], ["Created", (t) => when(t.created)]], page.results));
  }
}

async function profilePage() {
  const gen = generation;
  const me = await api("GET", "/me");
  sessionStorage.setItem("gh.me", JSON.stringify(me));
  const prefs = await api("GET", `/users/${me.id}/preferences`);
  const tfa = await api("GET", `/users/${me.id}/two_factor`).catch(() => null);
  const tfaBox = h("div");
  const profile = form([field("First name", { name: "first_name", value: me.first_name }), field("Last name", { name: "last_name", value: me.last_name }),
    field("Phone (+country code)", { name: "phone_number", value: me.phone_number || "" })],
  "Save profile", async (data) => {
    await api("PATCH", "/me", { first_name: data.first_name, last_name: data.last_name, phone_number: data.phone_number || null });
    notice("Profile saved.");
  });
  const preferences = form([field("Date format", { name: "date_format", value: prefs.date_format }), field("Number format", { name: "number_format", value: prefs.number_format }),
    field("Time zone", { name: "timezone", value: prefs.timezone }),
    field("Clock", { name: "use_24", options: [["true", "24-hour"], ["false", "12-hour"]], value: String(prefs.use_24) })],
  "Save preferences", async (data) => {
    await api("PATCH", `/users/${me.id}/preferences`, { ...data, use_24: data.use_24 === "true" });
    notice("Preferences saved.");
  });
  function drawTfa(details) {
    const enabled = details && details.two_factor_auth_method;
    if (enabled) {
      tfaBox.replaceChildren(h("p", {}, `Enabled: ${details.two_factor_auth_method}.`),
        form([field("Current code", { name: "code", inputmode: "numeric", pattern: "[0-9]{6}" })], "Disable two-factor", async (d) => {
          await api("POST", `/users/${me.id}/two_factor/disable`, d.code ? { two_factor_auth_code: d.code } : {});
          notice("Two-factor authentication disabled."); drawTfa(null);
        }));
      return;
    }
    tfaBox.replaceChildren(h("p", { class: "muted" }, "Not enabled."), button("Set up an authenticator app", async () => {
      const setup = await api("POST", `/users/${me.id}/two_factor/setup`, { two_factor_auth_method: "app" });
      const s = setup.setup_details;
      tfaBox.replaceChildren(h("div", { class: "secret" }, h("p", {}, "Scan with your authenticator app, then enter the code it shows."),
        h("img", { src: s.qr_code, alt: `QR code for ${s.account_name}`, width: 200, height: 200 }),
        h("p", {}, "Or type the secret: ", h("code", {}, s.secret))),
      form([field("Code from the app", { name: "code", inputmode: "numeric", pattern: "[0-9]{6}", required: true })], "Enable", async (d) => {
        await api("POST", `/users/${me.id}/two_factor/verify`, { two_factor_auth_code: d.code, two_factor_auth_method: "app" });
        notice("Two-factor authentication enabled."); drawTfa({ two_factor_auth_method: "app" });
      }));
    }));
  }
  render(gen, "Profile", h("p", {}, `${me.username} · ${me.account_type}`), profile, h("h2", {}, "Preferences"), preferences,
    h("h2", {}, "Two-factor authentication"), tfaBox);
  drawTfa(tfa);
}

async function gatewayLitePage() {
  const gen = generation;
  const gwBox = h("div"); const fpBox = h("div"); const impBox = h("div");
  async function load() {
    const [devices, fps, imports] = await Promise.all([api("GET", "/devices/?limit=500"), api("GET", "/integrations/gateway_lite/fingerprints"),
      api("GET", "/integrations/gateway_lite/import").catch(() => ({ results: [] }))]);
    gwBox.replaceChildren(table([["EUID", (d) => d.username], ["Name", (d) => d.name], ["State", (d) => d.commission_state], ["Connection", (d) => badge(d.online)],
      ["Actions", (d) => (d.commission_state === "customer_provisioned" ? button("Release", async () => {
        await api("PUT", `/devices/${d.uuid}/release/`); notice(`${d.username} released.`); await load();
      }, "danger") : ""), "actions"]], devices.results.filter((d) => d.kind === "gateway_lite"), "No Gateway Lites."));
    fpBox.replaceChildren(table([["Fingerprint", (f) => f.fingerprint], ["Description", (f) => f.description],
      ["Actions", (f) => button("Delete", async () => { await api("DELETE", `/integrations/gateway_lite/fingerprints/${f.id}`); await load(); }, "danger"), "actions"]], fps, "No fingerprints."));
    impBox.replaceChildren(table([["File", (i) => i.csv_file], ["Started", (i) => when(i.created)], ["Status", (i) => state(i.status)],
      ["Progress", (i) => h("span", {}, h("progress", { max: i.total_rows || 1, value: i.processed_rows, "aria-label": `${i.csv_file} progress` }), ` ${i.processed_rows}/${i.total_rows}`)],
      ["Errors", (i) => i.error_message]], imports.results, "No imports."));
    // An import under way: its progress is read again every second while the page is open.
    clearTimeout(timer);
    if (!gone && imports.results.some((i) => i.status === "pending" || i.status === "processing")) timer = setTimeout(() => load().catch(showError), 1000);
  }
  let timer = null;
  let gone = false;
  leave.push(() => { gone = true; clearTimeout(timer); });
  const acquire = form([field("EUID or QR payload", { name: "euid", required: true, maxlength: 2000 })], "Acquire", async (d) => {
    const got = await api("POST", "/integrations/gateway_lite/acquire", { euid: d.euid.trim() });
    notice(`Acquired ${got.euid}: ${got.access_url}`); await load();
  });
  const addFp = form([field("Fingerprint (32 hex digits)", { name: "fingerprint", required: true, pattern: "[0-9a-fA-F]{32}" }), field("Description", { name: "description" })],
    "Add fingerprint", async (d) => { await api("POST", "/integrations/gateway_lite/fingerprints", d); notice("Fingerprint added."); await load(); });
  const upload = form([field("Product id", { name: "product_id", required: true }), field("CSV file", { name: "csv_file", type: "file", accept: ".csv,text/csv", required: true })],
    "Upload import", async (d, f) => { await api("POST", "/integrations/gateway_lite/import", new FormData(f)); notice(`Import of ${d.csv_file.name} started.`); await load(); });
  render(gen, "Gateway Lite", acquire, gwBox, h("h2", {}, "Fingerprints"), addFp, fpBox, h("h2", {}, "Imports"), upload, impBox);
  await load();
}

async function locksPage() {
  const gen = generation;
  const box = h("div"); const secretBox = h("div");
  async function waitFor(cmd) {
    notice(`${cmd.action} sent: ${cmd.status}…`);
    const done = await api("GET", `/iotlock/commands/${cmd.id}?wait=15`);
    notice(`${done.action}: ${done.status}${done.reason ? ` (${done.reason})` : ""}`);
    await load();
  }
  async function mailboxView(m) {
    const history = await api("GET", `/iotlock/mailboxes/${m.id}/events?limit=10`);
    return h("div", { class: "card" }, h("strong", {}, `Mailbox ${m.name}`), h("p", { class: "muted" }, `${m.pins.length} PIN(s)`),
      h("p", {}, button("Unlock", async () => waitFor(await api("POST", `/iotlock/mailboxes/${m.id}/unlock`)))),
      m.pins.map((p) => h("p", {}, `PIN set ${when(p.created)} `, button("Remove", async () => waitFor(await api("DELETE", `/iotlock/mailboxes/${m.id}/pins/${p.id}`)), "danger"))),
      form([field("New PIN (4-8 digits)", { name: "pin", inputmode: "numeric", pattern: "[1-9][0-9]{3,7}", required: true, autocomplete: "off" })], "Add PIN",
        async (d) => waitFor(await api("POST", `/iotlock/mailboxes/${m.id}/pins`, { pin: d.pin }))),
      h("p", { class: "muted" }, "History"), table([["When", (e) => when(e.at)], ["What", (e) => `${e.kind}: ${e.name}`], ["Status", (e) => (e.status ? state(e.status) : "")]], history.results, "No history."));
  }
  async function load() {
    let gateways;
    try { gateways = await api("GET", "/iotlock/gateways"); } catch (err) {
      if (err.code === "account_not_found") { box.replaceChildren(h("p", { class: "muted" }, "You are not a member of an IoTLock account (POST /iotlock/register).")); return; }
      throw err;
    }
    const cards = [];
    for (const g of gateways.results) {
      cards.push(h("section", { "aria-label": `Gateway ${g.name}`, "data-thing": g.thing_id }, h("h2", {}, `${g.name} `, badge(g.online)),
        h("p", { class: "muted" }, `thing ${g.thing_id} · last seen ${when(g.last_seen)}`),
        h("div", { class: "mailboxes" }, await Promise.all(g.mailboxes.map(mailboxView))),
        form([field("Mailbox name", { name: "name", required: true }), field("Public key", { name: "public_key", required: true })], "Add mailbox",
          async (d) => { await api("POST", `/iotlock/gateways/${g.id}/mailboxes`, d); notice(`Mailbox ${d.name} added.`); await load(); }),
        button("Remove gateway", async () => { if (confirm(`Remove ${g.name}?`)) await waitFor(await api("DELETE", `/iotlock/gateways/${g.id}`)); }, "danger")));
    }
    box.replaceChildren(...(cards.length ? cards : [h("p", { class: "muted" }, "No gateways yet.")]));
  }
  const add = form([field("Gateway name", { name: "name", required: true }), field("Public key", { name: "public_key" })], "Add gateway", async (d) => {
    const g = await api("POST", "/iotlock/gateways", d);
    secretBox.replaceChildren(h("div", { class: "secret" }, h("strong", {}, "MQTT login (the password is shown once): "),
      json({ host: g.mqtt.host, port: g.mqtt.port, tls_port: g.mqtt.tls_port, client_id: g.mqtt.client_id, username: g.mqtt.username, password: g.mqtt.password })));
    await load();
  });
  render(gen, "Locks", add, secretBox, box);
  await load();
  // The gateways are devices of the member who added them: their state arrives live on that
  // member's stream (other members see it on their next look).
  live(gen, {}, (name, d) => {
    const section = name === "device" && d.kind === "lock_gateway" && box.querySelector(`section[data-thing="${CSS.escape(d.username)}"]`);
    if (section) section.querySelector(".badge").replaceWith(badge(d.online));
  });
}

// --- routing -----------------------------------------------------------------------------------
let carried = null; // a notice for the next page (set just before changing it)
function noticeNext(text) { carried = text; }
async function route() {
  for (const stop of leave) stop();
  leave = [];
  const gen = ++generation;
  const [, page = "devices", id] = location.hash.replace(/^#\/?/, "#").split(/[#/]/);
  if (!session.access && page !== "login") { location.hash = "#/login"; return; }
  drawNav(page);
  clearMessages();
  if (carried) { notice(carried); carried = null; }
  main.setAttribute("aria-busy", "true");
  try {
    if (page === "login") loginPage();
    else if (page === "devices" && id) await devicePage(Number(id));
    else if (page === "devices") await devicesPage();
    else if (page === "admin") await adminPage();
    else if (page === "users") await usersPage();
    else if (page === "profile") await profilePage();
    else if (page === "gateway-lite") await gatewayLitePage();
    else if (page === "locks") await locksPage();
    else render(gen, "Not found", h("p", {}, "No such page. "), h("a", { href: "#/devices" }, "Devices"));
  } catch (err) {
    if (err === STALE || gen !== generation) return; // another page has taken over
    showError(err);
  }
  if (gen !== generation) return;
  main.setAttribute("aria-busy", "false");
  if (!main.contains(document.activeElement)) main.focus();
}
window.addEventListener("hashchange", route);
route();
