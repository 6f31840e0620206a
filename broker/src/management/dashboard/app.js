// Warren's dashboard: one page, no dependencies, talking only to the management API (/api).
// Credentials stay in sessionStorage (HTTP Basic, as RabbitMQ's UI sends them).
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const h = (tag, attrs = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? "" : v);
  }
  for (const kid of kids.flat()) {
    if (kid === null || kid === undefined || kid === false) continue;
    e.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return e;
};
const enc = encodeURIComponent;
const fmtNum = (n) => (typeof n === "number" ? n.toLocaleString("en-US", { maximumFractionDigits: 1 }) : n ?? "");
const fmtRate = (n) => (typeof n === "number" ? `${n.toLocaleString("en-US", { maximumFractionDigits: 1 })}/s` : "");
const at = (o, path) => path.split(".").reduce((v, k) => (v == null ? v : v[k]), o);

// ---- API

class ApiError extends Error {
  constructor(status, reason) {
    super(reason);
    this.status = status;
  }
}

function authHeader() {
  return sessionStorage.getItem("warren-auth");
}

async function api(method, path, body) {
  // X-Requested-With: the API then sends no Basic challenge, which would make the browser
  // pop up its own login dialog.
  const headers = { authorization: authHeader() || "", "x-requested-with": "XMLHttpRequest" };
  if (body !== undefined) headers["content-type"] = "application/json";
  const r = await fetch(`/api${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
  });
  if (r.status === 401 && path !== "/whoami") {
    showLogin("Your session ended: sign in again.");
    throw new ApiError(401, "not signed in");
  }
  const text = await r.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch (_) {
    data = text;
  }
  if (!r.ok) {
    const reason = data && data.reason ? (typeof data.reason === "string" ? data.reason : JSON.stringify(data.reason)) : `HTTP ${r.status}`;
    throw new ApiError(r.status, reason);
  }
  return data;
}

let toastTimer = null;
function toast(text, bad = false) {
  const t = $("#toast");
  t.textContent = text;
  t.className = `toast show${bad ? " bad" : ""}`;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (t.className = "toast"), 3500);
}

async function attempt(what, f) {
  try {
    return await f();
  } catch (e) {
    if (e.status !== 401) toast(`${what}: ${e.message}`, true);
    return undefined;
  }
}

// ---- login

function showLogin(message = "") {
  stopTimers();
  $("#app").hidden = true;
  $("#login").hidden = false;
  $("#login-error").textContent = message;
  $("#login-user").focus();
}

async function tryLogin(user, password) {
  sessionStorage.setItem("warren-auth", "Basic " + btoa(unescape(enc(`${user}:${password}`))));
  try {
    const me = await api("GET", "/whoami");
    $("#who").textContent = me.name;
    $("#login").hidden = true;
    $("#app").hidden = false;
    route();
  } catch (e) {
    sessionStorage.removeItem("warren-auth");
    showLogin(e.status === 401 ? "Login failed: wrong user or password." : `Login failed: ${e.message}`);
  }
}

$("#login-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  tryLogin($("#login-user").value, $("#login-password").value);
});
$("#logout").addEventListener("click", () => {
  sessionStorage.removeItem("warren-auth");
  showLogin();
});

// ---- timers: each view may poll; leaving it stops them

let timers = [];
function every(ms, f) {
  f();
  timers.push(setInterval(() => document.visibilityState === "visible" && f(), ms));
}
function stopTimers() {
  timers.forEach(clearInterval);
  timers = [];
}

// ---- charts: a line chart on a canvas, redrawn from a series of samples

class Chart {
  constructor(title, series, unit) {
    this.series = series; // [{key, label, color}]
    this.unit = unit;
    this.points = []; // [{t, values: {key: number}}]
    this.canvas = h("canvas", { class: "chart" });
    this.el = h(
      "div",
      { class: "card" },
      h("h2", {}, title),
      this.canvas,
      h("div", { class: "legend" }, series.map((s) => h("span", {}, h("i", { style: `background:${s.color}` }), s.label)))
    );
  }
  add(values) {
    this.points.push({ t: Date.now(), values });
    if (this.points.length > 120) this.points.shift();
    this.draw();
  }
  draw() {
    const c = this.canvas;
    const dpr = window.devicePixelRatio || 1;
    const w = c.clientWidth || 400;
    const hgt = c.clientHeight || 220;
    c.width = w * dpr;
    c.height = hgt * dpr;
    const g = c.getContext("2d");
    g.scale(dpr, dpr);
    g.clearRect(0, 0, w, hgt);
    const pad = { l: 56, r: 10, t: 10, b: 22 };
    const pw = w - pad.l - pad.r;
    const ph = hgt - pad.t - pad.b;
    let max = 0;
    for (const p of this.points) for (const s of this.series) max = Math.max(max, p.values[s.key] || 0);
    max = max <= 0 ? 1 : niceMax(max);
    g.font = "11px system-ui, sans-serif";
    g.fillStyle = "#6b7384";
    g.strokeStyle = "#e3e6eb";
    g.lineWidth = 1;
    for (let i = 0; i <= 4; i++) {
      const y = pad.t + ph - (ph * i) / 4;
      g.beginPath();
      g.moveTo(pad.l, y + 0.5);
      g.lineTo(pad.l + pw, y + 0.5);
      g.stroke();
      const label = fmtNum((max * i) / 4) + (this.unit || "");
      g.fillText(label, pad.l - 6 - g.measureText(label).width, y + 4);
    }
    const span = 120 * 5000;
    const now = Date.now();
    const x = (t) => pad.l + pw - ((now - t) / span) * pw;
    g.fillText("10 min ago", pad.l, hgt - 6);
    g.fillText("now", pad.l + pw - g.measureText("now").width, hgt - 6);
    for (const s of this.series) {
      g.strokeStyle = s.color;
      g.lineWidth = 2;
      g.beginPath();
      this.points.forEach((p, i) => {
        const px = Math.max(pad.l, x(p.t));
        const py = pad.t + ph - ((p.values[s.key] || 0) / max) * ph;
        i ? g.lineTo(px, py) : g.moveTo(px, py);
      });
      g.stroke();
    }
  }
}

function niceMax(v) {
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

// Charts keep their history while the page is open.
const charts = {
  rates: new Chart("Message rates", [
    { key: "publish", label: "Publish", color: "var(--c1)" },
    { key: "deliver_get", label: "Deliver / get", color: "var(--c2)" },
    { key: "ack", label: "Ack", color: "var(--c3)" },
    { key: "confirm", label: "Confirm", color: "var(--c4)" },
  ], "/s"),
  depth: new Chart("Queued messages", [
    { key: "messages", label: "Total", color: "var(--c1)" },
    { key: "messages_ready", label: "Ready", color: "var(--c2)" },
    { key: "messages_unacknowledged", label: "Unacked", color: "var(--c3)" },
  ]),
};
// Canvas strokes take CSS colours, not variables: resolve them once.
function resolveColors() {
  const style = getComputedStyle(document.documentElement);
  for (const c of Object.values(charts))
    for (const s of c.series) if (s.color.startsWith("var(")) s.color = style.getPropertyValue(s.color.slice(4, -1)).trim() || "#1c7ed6";
}

// ---- overview

async function overview(main) {
  main.append(h("h1", {}, "Overview"));
  const stats = h("div", { class: "stats", id: "stats" });
  const nodeInfo = h("p", { class: "muted", id: "node-info" });
  main.append(nodeInfo, stats, h("div", { class: "charts" }, charts.rates.el, charts.depth.el));
  const card = (k, v, id) => h("div", { class: "stat" }, h("div", { class: "v", id }, fmtNum(v)), h("div", { class: "k" }, k));
  every(5000, async () => {
    const o = await attempt("overview", () => api("GET", "/overview"));
    if (!o) return;
    nodeInfo.textContent = `${o.product_name} ${o.product_version} on ${o.node} · RabbitMQ-compatible ${o.rabbitmq_version}`;
    const t = o.object_totals || {};
    const q = o.queue_totals || {};
    const m = o.message_stats || {};
    stats.replaceChildren(
      card("Connections", t.connections, "stat-connections"),
      card("Channels", t.channels, "stat-channels"),
      card("Queues", t.queues, "stat-queues"),
      card("Consumers", t.consumers, "stat-consumers"),
      card("Messages", q.messages, "stat-messages"),
      card("Ready", q.messages_ready, "stat-ready"),
      card("Unacked", q.messages_unacknowledged, "stat-unacked"),
      card("Publish rate", fmtRate(at(m, "publish_details.rate")), "stat-publish-rate")
    );
    const rate = (k) => at(m, `${k}_details.rate`) || 0;
    charts.rates.add({ publish: rate("publish"), deliver_get: rate("deliver_get"), ack: rate("ack"), confirm: rate("confirm") });
    charts.depth.add({ messages: q.messages || 0, messages_ready: q.messages_ready || 0, messages_unacknowledged: q.messages_unacknowledged || 0 });
  });
}

// ---- tables: paged, sorted and filtered by the API (page, page_size, sort, sort_reverse, name)

function listTable({ id, path, columns, paged = true, actions, nameKey = "name" }) {
  const state = { page: 1, sort: null, reverse: false, filter: "", regex: false };
  const size = 100;
  const body = h("tbody");
  const head = h("thead");
  const info = h("span", { id: `${id}-count` });
  const prev = h("button", { class: "secondary", onclick: () => { state.page--; load(); } }, "‹ Prev");
  const next = h("button", { class: "secondary", onclick: () => { state.page++; load(); } }, "Next ›");
  const filter = h("input", { id: `${id}-filter`, placeholder: `Filter by ${nameKey}`, type: "search" });
  const regex = h("input", { type: "checkbox", id: `${id}-regex` });
  let debounce;
  filter.addEventListener("input", () => {
    clearTimeout(debounce);
    debounce = setTimeout(() => { state.filter = filter.value; state.page = 1; load(); }, 250);
  });
  regex.addEventListener("change", () => { state.regex = regex.checked; state.page = 1; load(); });
  const renderHead = () => {
    head.replaceChildren(
      h("tr", {}, columns.map((c) =>
        h("th", {
          class: [c.num ? "num" : "", state.sort === c.key ? "sorted" : "", state.sort === c.key && state.reverse ? "rev" : ""].join(" "),
          onclick: () => {
            if (state.sort === c.key) state.reverse = !state.reverse;
            else { state.sort = c.key; state.reverse = false; }
            load();
          },
        }, c.label)
      ), actions ? h("th", {}, "") : null)
    );
  };
  async function load() {
    renderHead();
    const q = new URLSearchParams();
    let items;
    let total;
    if (paged) {
      q.set("page", state.page);
      q.set("page_size", size);
      if (state.filter) { q.set("name", state.filter); q.set("use_regex", state.regex); }
      if (state.sort) { q.set("sort", state.sort); q.set("sort_reverse", state.reverse); }
      const r = await attempt(`listing ${id}`, () => api("GET", `${path}?${q}`));
      if (!r) return;
      items = r.items;
      total = r.filtered_count;
      info.textContent = `${fmtNum(r.filtered_count)} of ${fmtNum(r.total_count)} · page ${r.page} of ${Math.max(r.page_count, 1)}`;
      prev.disabled = r.page <= 1;
      next.disabled = r.page >= r.page_count;
    } else {
      const all = await attempt(`listing ${id}`, () => api("GET", path));
      if (!all) return;
      let f = all;
      if (state.filter) {
        let re = null;
        try { re = state.regex ? new RegExp(state.filter) : null; } catch (_) { re = null; }
        f = all.filter((i) => {
          const v = String(at(i, nameKey) ?? "");
          return re ? re.test(v) : v.includes(state.filter);
        });
      }
      if (state.sort) {
        f = [...f].sort((a, b) => {
          const x = at(a, state.sort), y = at(b, state.sort);
          const c = typeof x === "number" && typeof y === "number" ? x - y : String(x ?? "").localeCompare(String(y ?? ""));
          return state.reverse ? -c : c;
        });
      }
      total = f.length;
      const pages = Math.max(1, Math.ceil(f.length / size));
      state.page = Math.min(Math.max(1, state.page), pages);
      items = f.slice((state.page - 1) * size, state.page * size);
      info.textContent = `${fmtNum(f.length)} of ${fmtNum(all.length)} · page ${state.page} of ${pages}`;
      prev.disabled = state.page <= 1;
      next.disabled = state.page >= pages;
    }
    body.replaceChildren(
      ...items.map((i) =>
        h("tr", { "data-name": at(i, nameKey) }, columns.map((c) => {
          const v = at(i, c.key);
          const shown = c.fmt ? c.fmt(v, i) : typeof v === "object" && v !== null ? JSON.stringify(v) : fmtNum(v);
          return h("td", { class: [c.num ? "num" : "", c.wrap ? "wrap" : ""].join(" ") }, shown);
        }), actions ? h("td", {}, actions(i, load)) : null)
      )
    );
    if (!items.length) body.append(h("tr", {}, h("td", { colspan: columns.length + (actions ? 1 : 0), class: "muted" }, total === 0 && state.filter ? "Nothing matches." : "None.")));
  }
  const el = h(
    "div",
    { class: "card", id },
    h("div", { class: "toolbar" }, filter, h("label", { class: "muted" }, regex, " regex"), h("span", { class: "grow" }), info),
    h("table", {}, head, body),
    h("div", { class: "pager" }, prev, next)
  );
  return { el, load };
}

const queueLink = (name, q) => h("a", { href: `#/queue/${enc(q.vhost)}/${enc(name)}` }, name);
const exchangeLink = (name, x) => h("a", { href: `#/exchange/${enc(x.vhost)}/${enc(name === "" ? "amq.default" : name)}` }, name === "" ? "(AMQP default)" : name);
const yes = (v) => (v ? "✓" : "");

function queues(main) {
  main.append(h("h1", {}, "Queues"));
  const t = listTable({
    id: "queues",
    path: "/queues",
    columns: [
      { key: "vhost", label: "Vhost" },
      { key: "name", label: "Name", fmt: queueLink },
      { key: "type", label: "Type" },
      { key: "durable", label: "Durable", fmt: yes },
      { key: "messages_ready", label: "Ready", num: true },
      { key: "messages_unacknowledged", label: "Unacked", num: true },
      { key: "messages", label: "Total", num: true },
      { key: "consumers", label: "Consumers", num: true },
      { key: "policy", label: "Policy" },
      { key: "message_stats.publish_details.rate", label: "In", num: true, fmt: fmtRate },
      { key: "message_stats.deliver_get_details.rate", label: "Out", num: true, fmt: fmtRate },
    ],
  });
  const name = h("input", { id: "new-queue-name", placeholder: "orders", required: true });
  const vhost = h("input", { id: "new-queue-vhost", value: "/" });
  const durable = h("select", { id: "new-queue-durable" }, h("option", { value: "true" }, "durable"), h("option", { value: "false" }, "transient"));
  const args = h("input", { id: "new-queue-args", placeholder: '{"x-max-length": 1000}' });
  const add = h("form", {
    class: "card form",
    id: "new-queue",
    onsubmit: async (ev) => {
      ev.preventDefault();
      let a = {};
      if (args.value.trim()) {
        try { a = JSON.parse(args.value); } catch (e) { toast(`Arguments: ${e.message}`, true); return; }
      }
      const ok = await attempt("declaring the queue", () =>
        api("PUT", `/queues/${enc(vhost.value)}/${enc(name.value)}`, { durable: durable.value === "true", auto_delete: false, arguments: a })
      );
      if (ok !== undefined) { toast(`Queue '${name.value}' declared`); name.value = ""; t.load(); }
    },
  },
    h("label", {}, "Virtual host", vhost),
    h("label", {}, "Name", name),
    h("label", {}, "Durability", durable),
    h("label", {}, "Arguments (JSON)", args),
    h("button", { type: "submit", id: "new-queue-submit" }, "Add queue")
  );
  main.append(t.el, h("h2", {}, "Add a queue"), add);
  every(5000, t.load);
}

function exchanges(main) {
  main.append(h("h1", {}, "Exchanges"));
  const t = listTable({
    id: "exchanges",
    path: "/exchanges",
    columns: [
      { key: "vhost", label: "Vhost" },
      { key: "name", label: "Name", fmt: exchangeLink },
      { key: "type", label: "Type" },
      { key: "durable", label: "Durable", fmt: yes },
      { key: "auto_delete", label: "Auto-delete", fmt: yes },
      { key: "internal", label: "Internal", fmt: yes },
      { key: "arguments", label: "Arguments", wrap: true },
    ],
  });
  const name = h("input", { id: "new-exchange-name", required: true });
  const vhost = h("input", { value: "/" });
  const type = h("select", {}, ["direct", "fanout", "topic", "headers", "x-consistent-hash", "x-delayed-message"].map((k) => h("option", {}, k)));
  const add = h("form", {
    class: "card form",
    onsubmit: async (ev) => {
      ev.preventDefault();
      const ok = await attempt("declaring the exchange", () =>
        api("PUT", `/exchanges/${enc(vhost.value)}/${enc(name.value)}`, { type: type.value, durable: true })
      );
      if (ok !== undefined) { toast(`Exchange '${name.value}' declared`); name.value = ""; t.load(); }
    },
  }, h("label", {}, "Virtual host", vhost), h("label", {}, "Name", name), h("label", {}, "Type", type), h("button", { type: "submit" }, "Add exchange"));
  main.append(t.el, h("h2", {}, "Add an exchange"), add);
  every(10000, t.load);
}

function bindingsView(main) {
  main.append(h("h1", {}, "Bindings"));
  const t = listTable({
    id: "bindings",
    path: "/bindings",
    paged: false,
    nameKey: "source",
    columns: [
      { key: "vhost", label: "Vhost" },
      { key: "source", label: "Source", fmt: exchangeLink },
      { key: "destination", label: "Destination" },
      { key: "destination_type", label: "Type" },
      { key: "routing_key", label: "Routing key" },
      { key: "arguments", label: "Arguments", wrap: true },
    ],
  });
  main.append(t.el);
  every(10000, t.load);
}

function connectionsView(main) {
  main.append(h("h1", {}, "Connections"));
  const t = listTable({
    id: "connections",
    path: "/connections",
    columns: [
      { key: "name", label: "Name" },
      { key: "user_provided_name", label: "Client's name" },
      { key: "user", label: "User" },
      { key: "vhost", label: "Vhost" },
      { key: "client_properties.product", label: "Client" },
      { key: "channels", label: "Channels", num: true },
      { key: "recv_oct_details.rate", label: "In", num: true, fmt: (v) => (v == null ? "" : `${fmtNum(v)} B/s`) },
      { key: "send_oct_details.rate", label: "Out", num: true, fmt: (v) => (v == null ? "" : `${fmtNum(v)} B/s`) },
    ],
    actions: (c, reload) =>
      h("button", {
        class: "danger",
        "data-close": c.name,
        onclick: async () => {
          if (!confirm(`Close connection ${c.name}?`)) return;
          const ok = await attempt("closing the connection", () =>
            fetch(`/api/connections/${enc(c.name)}`, { method: "DELETE", headers: { authorization: authHeader(), "x-requested-with": "XMLHttpRequest", "x-reason": "Closed from the Warren dashboard" } })
              .then((r) => { if (!r.ok) throw new ApiError(r.status, `HTTP ${r.status}`); return true; })
          );
          if (ok) { toast("Connection closed"); setTimeout(reload, 300); }
        },
      }, "Close"),
  });
  main.append(t.el);
  every(5000, t.load);
}

function channelsView(main) {
  main.append(h("h1", {}, "Channels"));
  const t = listTable({
    id: "channels",
    path: "/channels",
    columns: [
      { key: "name", label: "Name" },
      { key: "user", label: "User" },
      { key: "vhost", label: "Vhost" },
      { key: "consumer_count", label: "Consumers", num: true },
      { key: "prefetch_count", label: "Prefetch", num: true },
      { key: "messages_unacknowledged", label: "Unacked", num: true },
      { key: "confirm", label: "Confirm", fmt: yes },
      { key: "message_stats.publish", label: "Published", num: true },
    ],
  });
  main.append(t.el);
  every(5000, t.load);
}

function consumersView(main) {
  main.append(h("h1", {}, "Consumers"));
  const t = listTable({
    id: "consumers",
    path: "/consumers",
    nameKey: "consumer_tag",
    columns: [
      { key: "queue.vhost", label: "Vhost" },
      { key: "queue.name", label: "Queue", fmt: (n, c) => queueLink(n, c.queue) },
      { key: "consumer_tag", label: "Tag" },
      { key: "channel_details.name", label: "Channel" },
      { key: "ack_required", label: "Ack", fmt: yes },
      { key: "prefetch_count", label: "Prefetch", num: true },
      { key: "exclusive", label: "Exclusive", fmt: yes },
    ],
  });
  main.append(t.el);
  every(5000, t.load);
}

// ---- one queue: details, get, publish, purge, delete

function kv(pairs) {
  return h("dl", { class: "kv" }, pairs.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

function messageView(m) {
  const props = Array.isArray(m.properties) ? {} : m.properties;
  return h("div", { class: "msg" },
    h("div", {}, h("span", { class: "pill" }, m.payload_encoding), " ",
      `${fmtNum(m.payload_bytes)} bytes · exchange '${m.exchange}' · routing key '${m.routing_key}'`,
      m.redelivered ? h("span", { class: "pill" }, " redelivered") : null),
    Object.keys(props).length ? h("pre", { class: "muted" }, JSON.stringify(props)) : null,
    h("pre", { class: "payload" }, m.payload)
  );
}

function publishForm(vhost, exchange, fixedKey) {
  const key = h("input", { id: "publish-key", value: fixedKey ?? "", placeholder: "routing key" });
  const payload = h("textarea", { id: "publish-payload", placeholder: "message body" });
  const persistent = h("input", { type: "checkbox", id: "publish-persistent", checked: true });
  const out = h("span", { id: "publish-result", class: "muted" });
  return h("form", {
    class: "card",
    id: "publish",
    onsubmit: async (ev) => {
      ev.preventDefault();
      const r = await attempt("publishing", () =>
        api("POST", `/exchanges/${enc(vhost)}/${enc(exchange)}/publish`, {
          properties: persistent.checked ? { delivery_mode: 2 } : {},
          routing_key: key.value,
          payload: payload.value,
          payload_encoding: "string",
        })
      );
      if (r) { out.textContent = r.routed ? "Published: routed." : "Published, but no queue took it (unroutable)."; out.className = r.routed ? "pill ok" : "error"; }
    },
  },
    h("h2", {}, "Publish a message"),
    h("div", { class: "form" }, fixedKey === undefined ? h("label", {}, "Routing key", key) : null, h("label", {}, "Persistent", persistent)),
    h("p", {}, payload),
    h("button", { type: "submit", id: "publish-submit" }, "Publish"), " ", out
  );
}

async function queuePage(main, vhost, name) {
  const path = `/queues/${enc(vhost)}/${enc(name)}`;
  main.append(h("h1", {}, "Queue ", h("span", { id: "queue-name" }, name), h("span", { class: "muted" }, `  in ${vhost}`)));
  const details = h("div", { class: "card", id: "queue-details" });
  every(5000, async () => {
    const q = await attempt("reading the queue", () => api("GET", path));
    if (!q) return;
    details.replaceChildren(h("div", { class: "stats" },
      ...[["Ready", q.messages_ready, "queue-ready"], ["Unacked", q.messages_unacknowledged, "queue-unacked"], ["Total", q.messages, "queue-messages"], ["Consumers", q.consumers, "queue-consumers"]]
        .map(([k, v, id]) => h("div", { class: "stat" }, h("div", { class: "v", id }, fmtNum(v)), h("div", { class: "k" }, k)))),
      kv([["Type", q.type], ["Durable", String(q.durable)], ["Auto-delete", String(q.auto_delete)], ["Exclusive", String(q.exclusive)],
        ["Arguments", JSON.stringify(q.arguments)], ["Publish rate", fmtRate(at(q, "message_stats.publish_details.rate"))],
        ["Deliver rate", fmtRate(at(q, "message_stats.deliver_get_details.rate"))], ["Bytes", fmtNum(q.message_bytes)], ["Node", q.node],
        ...policyRows(q), ...dedupRows(q)]));
  });
  const count = h("input", { id: "get-count", type: "number", value: 1, min: 1, max: 500 });
  const mode = h("select", { id: "get-ackmode" },
    h("option", { value: "ack_requeue_true" }, "Nack, requeue"),
    h("option", { value: "ack_requeue_false" }, "Ack (remove)"),
    h("option", { value: "reject_requeue_true" }, "Reject, requeue"),
    h("option", { value: "reject_requeue_false" }, "Reject (dead-letter or drop)"));
  const encoding = h("select", {}, h("option", { value: "auto" }, "Auto (text or base64)"), h("option", { value: "base64" }, "Base64"));
  const got = h("div", { id: "got" });
  const get = h("form", {
    class: "card",
    id: "get",
    onsubmit: async (ev) => {
      ev.preventDefault();
      const r = await attempt("getting messages", () =>
        api("POST", `${path}/get`, { count: Number(count.value), ackmode: mode.value, encoding: encoding.value, truncate: 50000 })
      );
      if (r) got.replaceChildren(...(r.length ? r.map(messageView) : [h("p", { class: "muted" }, "The queue is empty.")]));
    },
  }, h("h2", {}, "Get messages"), h("div", { class: "form" }, h("label", {}, "Count", count), h("label", {}, "Mode", mode), h("label", {}, "Encoding", encoding), h("button", { type: "submit", id: "get-submit" }, "Get")), got);
  const bindings = listTable({
    id: "queue-bindings",
    path: `${path}/bindings`,
    paged: false,
    nameKey: "source",
    columns: [{ key: "source", label: "From", fmt: exchangeLink }, { key: "routing_key", label: "Routing key" }, { key: "arguments", label: "Arguments", wrap: true }],
  });
  const danger = h("div", { class: "card" }, h("h2", {}, "Purge or delete"),
    h("button", { class: "secondary", id: "purge", onclick: async () => {
      if (!confirm(`Remove every ready message from '${name}'?`)) return;
      const ok = await attempt("purging", () => api("DELETE", `${path}/contents`));
      if (ok !== undefined) toast("Purged");
    } }, "Purge"), " ",
    h("button", { class: "danger", id: "delete-queue", onclick: async () => {
      if (!confirm(`Delete queue '${name}' and its messages?`)) return;
      const ok = await attempt("deleting", () => api("DELETE", path));
      if (ok !== undefined) { toast("Queue deleted"); location.hash = "#/queues"; }
    } }, "Delete queue"));
  main.append(details, get, publishForm(vhost, "amq.default", name), h("h2", {}, "Bindings"), bindings.el, danger);
  bindings.load();
}

// The policies in force and what they set.
function policyRows(o) {
  const rows = [["Policy", o.policy || "none"]];
  if (o.operator_policy) rows.push(["Operator policy", o.operator_policy]);
  if (o.effective_policy_definition && Object.keys(o.effective_policy_definition).length)
    rows.push(["Effective policy definition", JSON.stringify(o.effective_policy_definition)]);
  return rows;
}

// x-message-deduplication: duplicates dropped and ids held.
function dedupRows(o) {
  const d = o.deduplication;
  const rows = d ? [["Duplicates dropped", fmtNum(d.duplicates)], ["Deduplication ids held", `${fmtNum(d.cache_entries)} of ${fmtNum(d.cache_size)}`]] : [];
  if (typeof o.messages_delayed === "number") rows.push(["Messages delayed", fmtNum(o.messages_delayed)]);
  return rows;
}

async function exchangePage(main, vhost, name) {
  const path = `/exchanges/${enc(vhost)}/${enc(name)}`;
  main.append(h("h1", {}, "Exchange ", name === "amq.default" ? "(AMQP default)" : name, h("span", { class: "muted" }, `  in ${vhost}`)));
  const x = await attempt("reading the exchange", () => api("GET", path));
  if (x) main.append(h("div", { class: "card" }, kv([["Type", x.type], ["Durable", String(x.durable)], ["Auto-delete", String(x.auto_delete)], ["Internal", String(x.internal)], ["Arguments", JSON.stringify(x.arguments)], ...policyRows(x), ...dedupRows(x)])));
  main.append(publishForm(vhost, name));
  for (const [dir, title] of [["source", "Bindings from this exchange"], ["destination", "Bindings to this exchange"]]) {
    const t = listTable({
      id: `exchange-bindings-${dir}`,
      path: `${path}/bindings/${dir}`,
      paged: false,
      nameKey: dir === "source" ? "destination" : "source",
      columns: [
        dir === "source" ? { key: "destination", label: "To" } : { key: "source", label: "From", fmt: exchangeLink },
        { key: "destination_type", label: "Type" },
        { key: "routing_key", label: "Routing key" },
        { key: "arguments", label: "Arguments", wrap: true },
      ],
    });
    main.append(h("h2", {}, title), t.el);
    t.load();
  }
  if (x && !name.startsWith("amq.")) {
    main.append(h("div", { class: "card" }, h("button", { class: "danger", onclick: async () => {
      if (!confirm(`Delete exchange '${name}'?`)) return;
      const ok = await attempt("deleting", () => api("DELETE", path));
      if (ok !== undefined) { toast("Exchange deleted"); location.hash = "#/exchanges"; }
    } }, "Delete exchange")));
  }
}

// ---- definitions

function admin(main) {
  main.append(h("h1", {}, "Definitions"));
  const out = h("p", { id: "definitions-result", class: "muted" });
  const file = h("input", { type: "file", id: "definitions-file", accept: "application/json,.json" });
  main.append(
    h("div", { class: "card" }, h("h2", {}, "Export"),
      h("p", { class: "muted" }, "Users, virtual hosts, permissions, exchanges, queues and bindings, in RabbitMQ's format."),
      h("button", { id: "export", onclick: async () => {
        const d = await attempt("exporting", () => api("GET", "/definitions"));
        if (!d) return;
        const a = h("a", { href: URL.createObjectURL(new Blob([JSON.stringify(d, null, 2)], { type: "application/json" })), download: "warren-definitions.json" });
        document.body.append(a);
        a.click();
        a.remove();
        out.textContent = `Exported ${d.queues.length} queues, ${d.exchanges.length} exchanges, ${d.bindings.length} bindings.`;
      } }, "Download definitions")),
    h("div", { class: "card" }, h("h2", {}, "Import"),
      h("p", { class: "muted" }, "A file exported from Warren or RabbitMQ."), file, " ",
      h("button", { id: "import", onclick: async () => {
        const f = file.files[0];
        if (!f) { toast("Choose a file first", true); return; }
        const text = await f.text();
        const ok = await attempt("importing", () => api("POST", "/definitions", text));
        if (ok !== undefined) out.textContent = `Imported ${f.name}.`;
      } }, "Import")),
    out
  );
}

// ---- tenancy: virtual hosts, users, permissions (administrators only, as in RabbitMQ)

const LIMITS = {
  vhost: ["max-connections", "max-queues", "max-publish-rate", "max-publish-bytes-rate"],
  user: ["max-connections", "max-channels", "max-publish-rate", "max-publish-bytes-rate"],
};

// A form of labelled inputs; `submit` gets the values by name and says whether it worked.
function form(id, fields, button, submit) {
  const inputs = {};
  const f = h("form", {
    class: "card form",
    id,
    onsubmit: async (ev) => {
      ev.preventDefault();
      const values = Object.fromEntries(Object.entries(inputs).map(([k, el]) => [k, el.value]));
      if (await submit(values)) for (const el of Object.values(inputs)) if (el.tagName === "INPUT" && !el.dataset.keep) el.value = "";
    },
  });
  for (const { name, label, options, value, placeholder, type, required } of fields) {
    const el = options
      ? h("select", { id: `${id}-${name}` }, options.map((o) => h("option", {}, o)))
      : h("input", { id: `${id}-${name}`, placeholder: placeholder || "", type: type || "text" });
    if (value !== undefined) { el.value = value; el.dataset.keep = "1"; }
    if (required) el.required = true;
    inputs[name] = el;
    f.append(h("label", {}, label, el));
  }
  f.append(h("button", { type: "submit", id: `${id}-submit` }, button));
  return f;
}

const deleteButton = (what, path, reload, attr) =>
  h("button", {
    class: "danger",
    [attr[0]]: attr[1],
    onclick: async () => {
      if (!confirm(`Delete ${what}?`)) return;
      const ok = await attempt(`deleting ${what}`, () => api("DELETE", path));
      if (ok !== undefined) { toast(`Deleted ${what}`); reload(); }
    },
  }, "Delete");

// The limits of every vhost or user as rows: {owner, limit, value}.
function limitsTable(kind) {
  return listTable({
    id: `${kind}-limits`,
    path: `/${kind}-limits`,
    paged: false,
    nameKey: kind,
    columns: [
      { key: kind, label: kind === "vhost" ? "Vhost" : "User" },
      { key: "value", label: "Limits", wrap: true, fmt: (v) => Object.entries(v || {}).map(([k, n]) => `${k} = ${fmtNum(n)}`).join(", ") },
    ],
    actions: (row, reload) => h("span", {}, Object.keys(row.value || {}).map((name) =>
      deleteButton(`${kind} limit ${name} of ${row[kind]}`, `/${kind}-limits/${enc(row[kind])}/${enc(name)}`, reload, ["data-limit", `${row[kind]}/${name}`]))),
  });
}

function limitForm(kind, reload) {
  return form(`${kind}-limit-form`, [
    { name: "owner", label: kind === "vhost" ? "Virtual host" : "User", required: true },
    { name: "name", label: "Limit", options: LIMITS[kind] },
    { name: "value", label: "Value (negative: none)", type: "number", required: true },
  ], "Set limit", async (v) => {
    const ok = await attempt("setting the limit", () => api("PUT", `/${kind}-limits/${enc(v.owner)}/${enc(v.name)}`, { value: Number(v.value) }));
    if (ok !== undefined) { toast(`Limit ${v.name} set`); reload(); }
    return ok !== undefined;
  });
}

function vhostsView(main) {
  main.append(h("h1", {}, "Virtual hosts"));
  const t = listTable({
    id: "vhosts",
    path: "/vhosts",
    paged: false,
    columns: [
      { key: "name", label: "Name" },
      { key: "description", label: "Description", wrap: true },
      { key: "tags", label: "Tags", fmt: (v) => (v || []).join(", ") },
      { key: "default_queue_type", label: "Default queue type" },
      { key: "messages", label: "Messages", num: true },
    ],
    actions: (v, reload) => deleteButton(`virtual host ${v.name}`, `/vhosts/${enc(v.name)}`, reload, ["data-delete-vhost", v.name]),
  });
  const add = form("new-vhost", [
    { name: "name", label: "Name", required: true },
    { name: "description", label: "Description" },
    { name: "tags", label: "Tags (comma-separated)" },
  ], "Add virtual host", async (v) => {
    const ok = await attempt("adding the virtual host", () =>
      api("PUT", `/vhosts/${enc(v.name)}`, { description: v.description, tags: v.tags }));
    if (ok !== undefined) { toast(`Virtual host '${v.name}' added`); t.load(); }
    return ok !== undefined;
  });
  const limits = limitsTable("vhost");
  main.append(t.el, h("h2", {}, "Add a virtual host"), add,
    h("h2", {}, "Limits"), limits.el, limitForm("vhost", limits.load));
  t.load();
  limits.load();
}

function usersView(main) {
  main.append(h("h1", {}, "Users"));
  const t = listTable({
    id: "users",
    path: "/users",
    paged: false,
    columns: [
      { key: "name", label: "Name" },
      { key: "tags", label: "Tags", fmt: (v) => (Array.isArray(v) ? v.join(", ") : v || "") },
      { key: "hashing_algorithm", label: "Password hash" },
    ],
    actions: (u, reload) => deleteButton(`user ${u.name}`, `/users/${enc(u.name)}`, reload, ["data-delete-user", u.name]),
  });
  const add = form("new-user", [
    { name: "name", label: "Name", required: true },
    { name: "password", label: "Password", type: "password" },
    { name: "tags", label: "Tags", placeholder: "management, monitoring" },
  ], "Add or update user", async (v) => {
    const body = { tags: v.tags };
    if (v.password) body.password = v.password;
    const ok = await attempt("saving the user", () => api("PUT", `/users/${enc(v.name)}`, body));
    if (ok !== undefined) { toast(`User '${v.name}' saved`); t.load(); }
    return ok !== undefined;
  });
  const limits = limitsTable("user");
  main.append(t.el, h("h2", {}, "Add or update a user"), add,
    h("h2", {}, "Limits"), limits.el, limitForm("user", limits.load));
  t.load();
  limits.load();
}

function permissionsView(main) {
  main.append(h("h1", {}, "Permissions"));
  const perms = listTable({
    id: "permissions",
    path: "/permissions",
    paged: false,
    nameKey: "user",
    columns: [
      { key: "user", label: "User" },
      { key: "vhost", label: "Vhost" },
      { key: "configure", label: "Configure" },
      { key: "write", label: "Write" },
      { key: "read", label: "Read" },
    ],
    actions: (p, reload) => deleteButton(`permissions of ${p.user} in ${p.vhost}`, `/permissions/${enc(p.vhost)}/${enc(p.user)}`, reload, ["data-clear-permission", `${p.vhost}/${p.user}`]),
  });
  const set = form("set-permission", [
    { name: "vhost", label: "Virtual host", value: "/" },
    { name: "user", label: "User", required: true },
    { name: "configure", label: "Configure", value: ".*" },
    { name: "write", label: "Write", value: ".*" },
    { name: "read", label: "Read", value: ".*" },
  ], "Set permissions", async (v) => {
    const ok = await attempt("setting permissions", () =>
      api("PUT", `/permissions/${enc(v.vhost)}/${enc(v.user)}`, { configure: v.configure, write: v.write, read: v.read }));
    if (ok !== undefined) { toast(`Permissions of '${v.user}' set`); perms.load(); }
    return ok !== undefined;
  });
  const topics = listTable({
    id: "topic-permissions",
    path: "/topic-permissions",
    paged: false,
    nameKey: "user",
    columns: [
      { key: "user", label: "User" },
      { key: "vhost", label: "Vhost" },
      { key: "exchange", label: "Exchange" },
      { key: "write", label: "Write" },
      { key: "read", label: "Read" },
    ],
    actions: (p, reload) => deleteButton(`topic permissions of ${p.user} in ${p.vhost}`, `/topic-permissions/${enc(p.vhost)}/${enc(p.user)}`, reload, ["data-clear-topic", `${p.vhost}/${p.user}`]),
  });
  const setTopic = form("set-topic-permission", [
    { name: "vhost", label: "Virtual host", value: "/" },
    { name: "user", label: "User", required: true },
    { name: "exchange", label: "Topic exchange", value: "amq.topic" },
    { name: "write", label: "Write (routing keys)", value: ".*" },
    { name: "read", label: "Read (routing keys)", value: ".*" },
  ], "Set topic permissions", async (v) => {
    const ok = await attempt("setting topic permissions", () =>
      api("PUT", `/topic-permissions/${enc(v.vhost)}/${enc(v.user)}`, { exchange: v.exchange, write: v.write, read: v.read }));
    if (ok !== undefined) { toast(`Topic permissions of '${v.user}' set`); topics.load(); }
    return ok !== undefined;
  });
  main.append(perms.el, h("h2", {}, "Set permissions"), set,
    h("h2", {}, "Topic permissions"), topics.el, setTopic);
  perms.load();
  topics.load();
}

function policiesView(main) {
  main.append(h("h1", {}, "Policies"));
  const tables = [["policies", "Policies"], ["operator-policies", "Operator policies"]].map(([path, title]) => {
    const t = listTable({
      id: path,
      path: `/${path}`,
      paged: false,
      columns: [
        { key: "vhost", label: "Vhost" },
        { key: "name", label: "Name" },
        { key: "pattern", label: "Pattern" },
        { key: "apply-to", label: "Apply to" },
        { key: "definition", label: "Definition", wrap: true },
        { key: "priority", label: "Priority", num: true },
      ],
      actions: (p, reload) => deleteButton(`policy ${p.name}`, `/${path}/${enc(p.vhost)}/${enc(p.name)}`, reload, [`data-delete-${path}`, p.name]),
    });
    return [path, title, t];
  });
  const add = form("new-policy", [
    { name: "vhost", label: "Virtual host", value: "/" },
    { name: "name", label: "Name", required: true },
    { name: "pattern", label: "Pattern (regex)", required: true, placeholder: "^orders\\." },
    { name: "applyto", label: "Apply to", options: ["all", "queues", "classic_queues", "quorum_queues", "streams", "exchanges"] },
    { name: "priority", label: "Priority", value: "0" },
    { name: "definition", label: "Definition (JSON)", required: true, placeholder: '{"max-length": 10000}' },
    { name: "kind", label: "Kind", options: ["policies", "operator-policies"] },
  ], "Set policy", async (v) => {
    let definition;
    try { definition = JSON.parse(v.definition); } catch (e) { toast(`Definition: ${e.message}`, true); return false; }
    const kind = v.kind === "operator-policies" ? "operator-policies" : "policies";
    const ok = await attempt("setting the policy", () =>
      api("PUT", `/${kind}/${enc(v.vhost)}/${enc(v.name)}`, { pattern: v.pattern, "apply-to": v.applyto, priority: Number(v.priority || 0), definition }));
    if (ok !== undefined) { toast(`Policy '${v.name}' set`); tables.forEach(([, , t]) => t.load()); }
    return ok !== undefined;
  });
  for (const [, title, t] of tables) main.append(h("h2", {}, title), t.el);
  main.append(h("h2", {}, "Set a policy"), add);
  tables.forEach(([, , t]) => t.load());
}

// ---- routing

const views = {
  "": overview,
  queues,
  exchanges,
  bindings: bindingsView,
  connections: connectionsView,
  channels: channelsView,
  consumers: consumersView,
  vhosts: vhostsView,
  users: usersView,
  permissions: permissionsView,
  policies: policiesView,
  admin,
};

function route() {
  if (!authHeader()) return showLogin();
  stopTimers();
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  const main = $("#main");
  main.replaceChildren();
  const view = parts[0] || "";
  for (const a of document.querySelectorAll("#nav a")) {
    const v = a.dataset.view === "overview" ? "" : a.dataset.view;
    a.classList.toggle("active", v === view || (view === "queue" && v === "queues") || (view === "exchange" && v === "exchanges"));
  }
  if (view === "queue" && parts.length >= 3) return queuePage(main, parts[1], parts.slice(2).join("/"));
  if (view === "exchange" && parts.length >= 3) return exchangePage(main, parts[1], parts.slice(2).join("/"));
  (views[view] || overview)(main);
}

window.addEventListener("hashchange", () => { if (!$("#app").hidden) route(); });
window.addEventListener("resize", () => Object.values(charts).forEach((c) => c.draw()));
resolveColors();
if (authHeader()) {
  api("GET", "/whoami").then((me) => {
    $("#who").textContent = me.name;
    $("#login").hidden = true;
    $("#app").hidden = false;
    route();
  }).catch(() => showLogin());
} else {
  showLogin();
}
