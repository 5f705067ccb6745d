// tidelog console: each page is the same shell; this script renders it from the JSON under /api/.
// Everything from the broker goes into the page as text (never as HTML). Charts use Chart.js when the
// server found it (Debian's libjs-chart.js); without it, the tables are all there is.
"use strict";

const REFRESH_MS = 3000;
let timer = null;
const charts = [];

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "on") for (const [event, fn] of Object.entries(v)) node.addEventListener(event, fn);
    else if (v !== null && v !== undefined && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

async function api(path, body) {
  const options = body === undefined ? {} : {
    method: "POST",
    headers: {"Content-Type": "application/json", "X-Tidelog-Console": "1"},
    body: JSON.stringify(body),
  };
  const reply = await fetch("/api/" + path, options);
  const data = await reply.json();
  if (!reply.ok) throw new Error(data.error || reply.statusText);
  return data;
}

const enc = encodeURIComponent;
function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : String(Math.round(n))) + " " + units[i];
}
const count = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en"));
const rate = (n) => (n === null || n === undefined ? "–" : Number(n).toFixed(n < 10 ? 1 : 0) + "/s");
function ms(n) {
  if (n === null || n === undefined || Number.isNaN(n)) return "–";
  if (n < 0) return "none";
  if (n < 1000) return n + " ms";
  for (const [unit, size] of [["d", 86400000], ["h", 3600000], ["min", 60000]]) {
    if (n >= 2 * size) return (n / size).toFixed(n % size ? 1 : 0) + " " + unit;
  }
  return (n / 1000).toFixed(1) + " s";
}
const when = (t) => new Date(t).toISOString().replace("T", " ").replace("Z", "");

function table(columns, rows, id) {
  return el("div", {class: "table-wrap"}, el("table", {id},
    el("thead", {}, el("tr", {}, columns.map(([title, , num]) => el("th", {class: num ? "num" : null}, title)))),
    el("tbody", {}, rows.map((row) => el("tr", {},
      columns.map(([, cell, num]) => el("td", {class: num ? "num" : null}, cell(row))))))));
}

function cards(items) {
  return el("div", {class: "cards"}, items.map(([label, value, id]) =>
    el("div", {class: "card"}, el("div", {class: "label"}, label), el("div", {class: "value", id}, value))));
}

function lineChart(title, labels, datasets) {
  const box = el("div", {class: "chart"});
  if (!window.Chart) {
    box.append(el("p", {class: "muted"}, `${title}: charts need Chart.js (Debian: apt-get install libjs-chart.js)`));
    return box;
  }
  const canvas = el("canvas", {"aria-label": title, role: "img"});
  box.append(canvas);
  const chart = new window.Chart(canvas, {
    type: "line",
    data: {labels, datasets: datasets.map((d) => ({...d, pointRadius: 0, borderWidth: 2, tension: 0.2}))},
    options: {animation: false, maintainAspectRatio: false, plugins: {title: {display: true, text: title}},
              scales: {y: {beginAtZero: true}}},
  });
  charts.push(chart);
  return box;
}

function seconds(series) {
  const last = series.at.length ? series.at[series.at.length - 1] : 0;
  return series.at.map((t) => `-${Math.round(last - t)}s`);
}

function failure(error) {
  return el("p", {class: "error", role: "alert"}, String(error.message || error));
}

function form(fields, button, submit, danger) {
  const inputs = {};
  const out = el("span", {class: "muted", role: "status"});
  const node = el("form", {on: {submit: async (event) => {
    event.preventDefault();
    out.className = "muted";
    out.textContent = "…";
    const values = {};
    for (const [name, input] of Object.entries(inputs)) values[name] = input.value;
    try {
      out.textContent = await submit(values);
      out.className = "ok";
    } catch (error) {
      out.textContent = String(error.message || error);
      out.className = "error";
    }
  }}});
  for (const [name, label, attrs] of fields) {
    inputs[name] = el(attrs && attrs.options ? "select" : "input", {name, ...(attrs || {}), options: null},
      ...((attrs && attrs.options) || []).map((o) => el("option", {value: o}, o)));
    node.append(el("label", {}, label, inputs[name]));
  }
  node.append(el("button", {type: "submit", class: danger ? "danger" : null}, button), out);
  return node;
}

// -- pages -------------------------------------------------------------------------------------------
async function overview(main) {
  const [o, s] = await Promise.all([api("overview"), api("series")]);
  main.replaceChildren(
    el("h1", {}, o.clustered ? `Cluster ${o.cluster_name}` : "Broker"),
    cards([["Brokers", count(o.brokers.length)], ["Topics", count(o.topics), "topics-count"],
           ["Partitions", count(o.partitions)], ["Records", count(o.records), "records-count"],
           ["Disk used", bytes(o.size_bytes)], ["Groups", count(o.groups)]]),
    el("h2", {}, "Alerts"),
    o.alerts.length ? el("div", {id: "alerts"}, o.alerts.map((a) => el("div", {class: "alert"}, a)))
                    : el("p", {class: "ok", id: "alerts"}, "No alerts: every partition in sync, no group far behind."),
    el("h2", {}, "Traffic"),
    lineChart("in and out, bytes/s", seconds(s), [
      {label: "in (all topics)", data: s.in_bytes}, {label: "out (this broker's fetches)", data: s.out_bytes}]),
    el("h2", {}, "Brokers"),
    table([["id", (b) => b.id, true], ["address", (b) => b.address], ["epoch", (b) => b.epoch, true],
           ["role", (b) => (!o.clustered ? "single broker" : [b.id === o.this_broker ? "this broker" : "",
                            b.id === o.controller ? "controller" : ""].filter(Boolean).join(", "))]],
          o.brokers.map((b) => (o.clustered ? b : {...b, id: "–", epoch: "–"}))));
}

async function topics(main) {
  const [list, s, settings] = await Promise.all([api("topics"), api("series"), api("settings")]);
  const last = (name) => (s.topics[name] || []).slice(-1)[0];
  const search = el("input", {type: "search", placeholder: "search topics", id: "topic-search", "aria-label": "search topics"});
  const shown = el("div");
  const render = () => shown.replaceChildren(table([
    ["topic", (t) => el("a", {href: "/topics/" + enc(t.name)}, t.name)],
    ["partitions", (t) => count(t.partitions), true], ["records", (t) => count(t.records), true],
    ["size", (t) => bytes(t.size_bytes), true], ["retention", (t) => ms(Number(t.retention_ms)), true],
    ["records in", (t) => rate(last(t.name)), true],
    ["health", (t) => (t.offline ? `${t.offline} offline` : t.under_replicated ? `${t.under_replicated} under-replicated` : "ok")],
  ], list.filter((t) => t.name.includes(search.value)), "topics"));
  search.addEventListener("input", render);
  render();
  main.replaceChildren(el("h1", {}, "Topics"), search, shown);
  if (settings.console_write) {
    main.append(el("h2", {}, "Create a topic"), form(
      [["name", "name", {required: true}], ["partitions", "partitions", {type: "number", min: 1, value: 1}],
       ["replication_factor", "replicas (cluster)", {type: "number", min: 1}]],
      "Create", async (v) => { await api("topics", v); return `created ${v.name} (reload to list it)`; }));
  }
  return false;
}

async function topic(main, name) {
  const [t, s, settings] = await Promise.all([api("topics/" + enc(name)), api("series"), api("settings")]);
  const parts = t.partitions;
  const clustered = parts.some((p) => p.replicas.length);
  main.replaceChildren(
    el("h1", {}, "Topic ", name),
    cards([["Partitions", count(parts.length)],
           ["Records", count(parts.reduce((a, p) => a + p.high_watermark - p.log_start, 0)), "topic-records"],
           ["Size", bytes(parts.reduce((a, p) => a + p.size_bytes, 0))],
           ["Retention", ms(Number(t.config.retention_ms))]]),
    el("p", {}, el("a", {href: `/topics/${enc(name)}/messages`, id: "browse"}, "Browse messages")),
    lineChart("records in per second", seconds(s), [{label: name, data: s.topics[name] || []}]),
    el("h2", {}, "Partitions"),
    table([["partition", (p) => p.partition, true],
           ...(clustered ? [["leader", (p) => p.leader ?? "none"], ["replicas", (p) => p.replicas.join(", ")],
                            ["in sync", (p) => p.isr.join(", ")]] : []),
           ["start", (p) => count(p.log_start), true], ["end", (p) => count(p.log_end), true],
           ["high watermark", (p) => count(p.high_watermark), true], ["size", (p) => bytes(p.size_bytes), true],
           ["segments", (p) => count(p.segments), true]], parts, "partitions"),
    el("h2", {}, "Settings"),
    table([["setting", (r) => r[0]], ["value", (r) => String(r[1])]], Object.entries(t.config)));
  if (settings.console_write) {
    main.append(
      el("h2", {}, "Produce a test message"),
      form([["partition", "partition", {type: "number", min: 0}], ["key", "key"], ["value", "value", {required: true}]],
        "Send", async (v) => { const r = await api(`topics/${enc(name)}/produce`, v); return `offset ${r.offset} of partition ${r.partition}`; }),
      el("h2", {}, "Delete this topic"),
      form([["confirm", `type ${name} to confirm`, {required: true}]], "Delete", async (v) => {
        await api(`topics/${enc(name)}/delete`, v);
        setTimeout(() => { location.href = "/topics"; }, 500);
        return "deleted";
      }, true));
    return false;
  }
}

async function messages(main, name) {
  const t = await api("topics/" + enc(name));
  const query = new URLSearchParams(location.search);
  const partition = el("select", {name: "partition", id: "partition"},
    t.partitions.map((p) => el("option", {value: p.partition, selected: String(p.partition) === (query.get("partition") || "0")}, p.partition)));
  const offset = el("input", {name: "offset", type: "number", min: 0, value: query.get("offset") || "", placeholder: "start"});
  const time = el("input", {name: "time", type: "datetime-local", step: 1, value: query.get("time") || ""});
  const shown = el("div", {id: "records"});
  const stack = [];
  let next = null;
  async function load(from) {
    const params = new URLSearchParams({partition: partition.value, limit: 20});
    if (from !== null && from !== undefined) params.set("offset", from);
    else if (offset.value !== "") params.set("offset", offset.value);
    else if (time.value) params.set("time", String(new Date(time.value + "Z").getTime()));
    try {
      const page = await api(`topics/${enc(name)}/messages?${params}`);
      next = page.next < page.high_watermark ? page.next : null;
      const show = (v) => (v === null ? el("span", {class: "muted"}, "null")
        : el("div", {}, el("span", {class: "kind"}, `${v.kind}, ${v.size} B`), el("pre", {}, v.text)));
      shown.replaceChildren(
        el("p", {class: "muted", id: "page-info"},
          `partition ${page.partition}: offsets ${page.log_start} to ${page.high_watermark - 1}; showing ${page.records.length} from ${page.start}`),
        table([["offset", (r) => r.offset, true], ["time (UTC)", (r) => when(r.timestamp)],
               ["key", (r) => show(r.key)], ["value", (r) => show(r.value)],
               ["headers", (r) => r.headers.map(([k, v]) => el("div", {}, k, ": ", v ? v.text : "null"))]],
              page.records, "messages"),
        el("p", {},
          el("button", {type: "button", id: "previous", disabled: !stack.length, on: {click: () => load(stack.pop())}}, "Previous"),
          " ",
          el("button", {type: "button", id: "next", disabled: next === null, on: {click: () => { stack.push(page.start); load(next); }}}, "Next")));
    } catch (error) {
      shown.replaceChildren(failure(error));
    }
  }
  main.replaceChildren(
    el("h1", {}, "Messages of ", el("a", {href: "/topics/" + enc(name)}, name)),
    el("form", {on: {submit: (e) => { e.preventDefault(); stack.length = 0; load(); }}},
      el("label", {}, "partition", partition), el("label", {}, "from offset", offset),
      el("label", {}, "or from time (UTC)", time), el("button", {type: "submit", id: "show"}, "Show")),
    shown);
  await load();
  return false;
}

async function groups(main) {
  const list = await api("groups");
  main.replaceChildren(el("h1", {}, "Consumer groups"),
    list.length ? table([["group", (g) => el("a", {href: "/groups/" + enc(g.group_id)}, g.group_id)],
                         ["state", (g) => g.state], ["members", (g) => count(g.members), true],
                         ["lag (records)", (g) => count(g.lag), true], ["lag (time)", (g) => ms(g.time_lag_ms), true]],
                        list, "groups")
                : el("p", {class: "muted"}, "No consumer groups yet."));
}

async function group(main, id) {
  const [g, s, settings] = await Promise.all([api("groups/" + enc(id)), api("series"), api("settings")]);
  const lag = g.partitions.reduce((a, p) => a + (p.lag || 0), 0);
  main.replaceChildren(
    el("h1", {}, "Group ", id),
    cards([["State", g.state], ["Members", count(g.members.length)], ["Generation", count(g.generation)],
           ["Lag (records)", count(lag), "group-lag"]]),
    lineChart("lag, records", seconds(s), [{label: id, data: s.lag[id] || []}]),
    el("h2", {}, "Partitions"),
    table([["topic", (p) => el("a", {href: "/topics/" + enc(p.topic)}, p.topic)], ["partition", (p) => p.partition, true],
           ["committed", (p) => count(p.committed), true], ["end", (p) => count(p.end), true],
           ["lag", (p) => count(p.lag), true], ["lag (time)", (p) => ms(p.time_lag_ms), true],
           ["owner", (p) => p.owner || "–"]], g.partitions, "group-partitions"),
    el("h2", {}, "Members"),
    table([["member", (m) => m.member_id], ["client", (m) => m.client_id],
           ["assignment", (m) => m.assignment.map(([t, p]) => `${t}-${p}`).join(", ")]], g.members, "members"));
  if (settings.console_write) {
    const preview = el("div", {id: "reset-preview"});
    const fields = [["topic", "topic", {required: true}], ["to", "to (earliest, latest or an offset)", {value: "earliest"}]];
    const run = (apply) => async (v) => {
      const r = await api(`groups/${enc(id)}/reset`, {...v, apply});
      preview.replaceChildren(table([["partition", (p) => p.partition, true], ["committed", (p) => count(p.committed), true],
                                     [apply ? "now" : "would be", (p) => count(p.target), true]], r.partitions));
      return apply ? "offsets reset" : "preview: nothing changed yet";
    };
    main.append(el("h2", {}, "Reset offsets (a group without members)"),
      form(fields, "Preview", run(false)), form(fields, "Reset", run(true), true), preview);
    return false;
  }
}

async function queues(main) {
  const list = await api("queues");
  main.replaceChildren(el("h1", {}, "Queues"),
    list.length ? table([["queue", (q) => el("a", {href: "/queues/" + enc(q.name)}, q.name)],
                         ["topics", (q) => q.topics.join(", ")], ["in flight", (q) => count(q.in_flight), true],
                         ["available", (q) => count(q.available), true], ["delayed", (q) => count(q.delayed), true],
                         ["oldest unacked", (q) => ms(q.oldest_unacked_ms), true],
                         ["dead letters to", (q) => q.dead_letter_topic || "–"]], list, "queues")
                : el("p", {class: "muted"}, "No queues yet."));
}

async function queue(main, name) {
  const [q, settings] = await Promise.all([api("queues/" + enc(name)), api("settings")]);
  main.replaceChildren(
    el("h1", {}, "Queue ", name),
    cards(Object.entries(q.totals).map(([k, v]) => [k.replace("_", " "), count(v)])),
    el("h2", {}, "Partitions"),
    table([["topic", (p) => p.topic], ["partition", (p) => p.partition, true], ["start", (p) => count(p.start), true],
           ["end", (p) => count(p.log_end), true], ["in flight", (p) => count(p.in_flight), true],
           ["available", (p) => count(p.available), true], ["delayed", (p) => count(p.delayed), true],
           ["oldest unacked", (p) => ms(p.oldest_unacked_ms), true]], q.partitions, "queue-partitions"),
    el("h2", {}, "Settings"),
    table([["setting", (r) => r[0]], ["value", (r) => String(r[1])]], Object.entries(q.config)));
  if (settings.console_write && q.config.dead_letter_topic) {
    main.append(el("h2", {}, `Redrive dead letters from ${q.config.dead_letter_topic}`),
      form([["target", "to topic", {value: q.config.topics[0]}], ["limit", "at most (0: all)", {type: "number", min: 0, value: 0}]],
        "Redrive", async (v) => { const r = await api(`queues/${enc(name)}/redrive`, v); return `${r.moved} moved to ${r.target}`; }));
    return false;
  }
}

async function settings(main) {
  const s = await api("settings");
  const rows = [];
  const walk = (prefix, value) => {
    if (value && typeof value === "object" && !Array.isArray(value)) for (const [k, v] of Object.entries(value)) walk(prefix ? `${prefix}.${k}` : k, v);
    else rows.push([prefix, Array.isArray(value) ? value.join(", ") : String(value)]);
  };
  walk("", s.broker);
  main.replaceChildren(el("h1", {}, "Broker settings"),
    el("p", {class: "muted"}, s.console_write ? "The console may act (--console-write)." : "The console is read-only (start with --console-write to act)."),
    table([["setting", (r) => r[0]], ["value", (r) => r[1]]], rows, "settings"));
  return false;
}

// -- routing -----------------------------------------------------------------------------------------
const ROUTES = [
  [/^\/$/, overview], [/^\/topics$/, topics], [/^\/topics\/([^/]+)$/, topic], [/^\/topics\/([^/]+)\/messages$/, messages],
  [/^\/groups$/, groups], [/^\/groups\/([^/]+)$/, group], [/^\/queues$/, queues], [/^\/queues\/([^/]+)$/, queue],
  [/^\/settings$/, settings],
];

async function route() {
  const main = document.getElementById("app");
  const path = location.pathname;
  for (const a of document.querySelectorAll("nav a")) {
    const href = a.getAttribute("href");
    a.classList.toggle("current", href === "/" ? path === "/" : path.startsWith(href));
  }
  for (const [pattern, page] of ROUTES) {
    const m = path.match(pattern);
    if (!m) continue;
    clearTimeout(timer);
    while (charts.length) charts.pop().destroy();
    let again = true;
    try {
      again = (await page(main, ...m.slice(1).map(decodeURIComponent))) !== false;
    } catch (error) {
      main.replaceChildren(failure(error));
    }
    if (again) timer = setTimeout(route, REFRESH_MS);  // live pages; pages with forms stay as they are
    document.body.dataset.loaded = path;
    return;
  }
  main.replaceChildren(failure(new Error(`no page ${path}`)));
}

document.addEventListener("DOMContentLoaded", route);
