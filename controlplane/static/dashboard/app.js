/* controlplane dashboard: plain JavaScript, no build, no third-party code.
 *
 * REST calls send `Authorization: Bearer <token>` (the token is kept in sessionStorage);
 * the live feed authenticates with its first message, so the token never appears in a URL.
 * Every value from the API is put into the page with textContent, never as HTML.
 */
"use strict";

(function () {
  const API = "/api/celery_task";
  const STATUSES = ["PENDING", "STARTED", "RETRY", "SUCCESS", "FAILURE", "REVOKED"];
  const TERMINAL = new Set(["SUCCESS", "FAILURE", "REVOKED"]);
  const KINDS = ["domain", "ip", "site", "cert", "fileleak", "fofa", "url", "vhost", "vuln", "github", "wih", "monitor_new", "asset_site_change"];
  // The columns of each result kind's table: the same as the CSV and XLSX exports
  // (controlplane/service/export.py COLUMNS).
  const RESULT_COLUMNS = {
    domain: ["domain", "type", "record", "ips", "cnames", "source", "cdn_name"],
    ip: ["ip", "domains", "ports", "port_count", "cdn_name", "ip_type", "geo_city", "geo_asn"],
    site: ["site", "hostname", "ip", "port", "status", "title", "server", "finger", "content_type", "body_length", "final_url"],
    cert: ["host", "ip", "port", "subject_cn", "issuer_cn", "sans", "not_before", "not_after", "self_signed", "fingerprint_sha256"],
    fileleak: ["site", "url", "path", "status", "content_length", "content_type", "title", "service", "hostnames"],
    fofa: ["host", "ip", "port", "protocol", "domain", "title", "server"],
    url: ["url", "site", "status_code", "title", "content_length", "source"],
    vhost: ["host", "ip", "port", "scheme", "status_code", "title", "body_length"],
    vuln: ["target", "severity", "name", "poc_id", "url", "ip", "service", "hostnames", "time"],
    github: ["repo", "path", "url", "sha", "time"],
    wih: ["type", "rule", "value", "severity", "source", "time"],
    monitor_new: ["kind", "value", "time"],
    asset_site_change: ["site", "time"],
  };
  const FILTER_KEYS = ["q", "celery_id", "status", "task_type", "worker", "created_after", "created_before"];
  const TOKEN_KEY = "controlplane.token";
  const MESSAGE_KEY = "controlplane.message";
  const SAMPLE_MS = 5000;
  const ACTIVE_MS = 15000;
  const MAX_SEEN = 5000;
  const MAX_SAMPLES = 180;
  const TEMPLATES = {
    domain_task: {
      name: "example", target: "example.com", type: "domain", task_tag: "task",
      options: { domain_brute: true, domain_brute_type: "small", port_scan: true, site_identify: true },
    },
    ip_task: { name: "example", target: "192.0.2.0/28", type: "ip", task_tag: "task", options: { port_scan_type: "test" } },
    run_risk_cruising: { name: "poc", target: "http://example.com", options: {} },
    github_task_task: { keyword: "example.com", options: { max_results: 50 } },
    fofa_task: { name: "fofa", query: "domain=\"example.com\"", options: {} },
    sleep_task: { seconds: 5 },
    busy_task: { seconds: 60 },
  };

  const $ = (id) => document.getElementById(id);

  const state = {
    token: null,
    role: null,
    page: 1,
    size: 20,
    total: 0,
    filters: {},
    sort: "-created",
    rows: new Map(), // celery_id -> {task, rev, tr}
    checked: new Set(),
    selected: null,
    detailRev: -1,
    detailStats: "",
    results: { kind: null, page: 1, total: 0 },
    types: {},
    seen: new Map(), // celery_id -> {task, rev, seq}: what the feed said last
    feedSeq: 0,
    finished: new Map(), // celery_id -> {t, status}: for the throughput chart
    samples: [], // {t, counts}: for the states chart
    since: null,
    feed: null,
    feedRetry: 0,
    feedTimer: null,
    timers: [],
    reloadTimer: null,
    lastReload: 0,
    activeTimer: null,
    lastActive: 0,
    templateText: "{}",
  };

  // -- helpers ---------------------------------------------------------------------

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value);
    }
    for (const child of children) if (child != null) node.append(child);
    return node;
  }

  function fmtTime(iso) {
    if (!iso) return "—";
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return String(iso);
    const pad = (n) => String(n).padStart(2, "0");
    const hms = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
    const today = new Date();
    if (d.toDateString() === today.toDateString()) return hms;
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${hms}`;
  }

  function shortType(name) {
    return String(name || "").replace(/^controlplane\./, "");
  }

  function label(task) {
    const target = Array.isArray(task.target) ? task.target.join(", ") : task.target;
    return task.name || target || "";
  }

  function errorText(err) {
    const env = err && err.envelope;
    if (!env) return String(err && err.message ? err.message : err);
    let text = `${env.message || "Error"} (${env.code})`;
    const data = env.data || {};
    if (data.field) text += `: ${data.field} ${data.reason || ""}`;
    else if (data.reason) text += `: ${data.reason}`;
    return text;
  }

  let toastTimer = null;
  function toast(text, bad) {
    const box = $("toast");
    box.textContent = text;
    box.classList.toggle("bad", Boolean(bad));
    box.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { box.hidden = true; }, bad ? 7000 : 4000);
  }

  function color(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(`--${name}`).trim() || "#888";
  }

  // -- API -------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, envelope) {
      super(envelope && envelope.message ? envelope.message : `HTTP ${status}`);
      this.status = status;
      this.envelope = envelope;
    }
  }

  async function api(method, path, body) {
    const headers = state.token ? { Authorization: `Bearer ${state.token}` } : {};
    const init = { method, headers, cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let resp;
    try {
      resp = await fetch(path, init);
    } catch (err) {
      throw new ApiError(0, { code: 0, message: "the API is unreachable", data: {} });
    }
    let env = null;
    try {
      env = await resp.json();
    } catch (err) {
      env = null;
    }
    if (!env || env.code !== 200) {
      const error = new ApiError(resp.status, env || { code: resp.status, message: resp.statusText, data: {} });
      if (error.envelope.code === 401 && state.role) logout("The API no longer accepts this token; log in again.");
      throw error;
    }
    return env.data;
  }

  // -- login -----------------------------------------------------------------------

  async function login(token) {
    state.token = token;
    const me = await api("GET", "/api/whoami/");
    state.role = me.role;
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    $("logout").hidden = !token; // with auth off there is nothing to log out of
    $("who").replaceChildren(el("b", { text: me.name }), ` · ${me.role}`);
    document.body.classList.toggle("viewer", me.role !== "operator");
    document.body.classList.toggle("operator", me.role === "operator");
    $("login").hidden = true;
    $("app").hidden = false;
    $("session").hidden = false;
    start();
  }

  function logout(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    if (message) sessionStorage.setItem(MESSAGE_KEY, message);
    state.role = null;
    if (state.feed) state.feed.close();
    location.reload();
  }

  function showLogin() {
    $("login").hidden = false;
    $("app").hidden = true;
    $("session").hidden = true;
    const message = sessionStorage.getItem(MESSAGE_KEY);
    if (message) {
      $("login-error").textContent = message;
      sessionStorage.removeItem(MESSAGE_KEY);
    }
    $("token").focus();
  }

  // -- start -----------------------------------------------------------------------

  async function start() {
    connectFeed();
    try {
      state.types = (await api("GET", `${API}/types/`)).task_types || {};
    } catch (err) {
      toast(`Task types: ${errorText(err)}`, true);
    }
    fillSelects();
    loadList();
    loadActive();
    seedFinished();
    sampleStates();
    state.timers.push(setInterval(sampleStates, SAMPLE_MS));
    state.timers.push(setInterval(() => { if (!document.hidden) loadActive(); }, ACTIVE_MS));
    state.timers.push(setInterval(drawCharts, 15000));
    window.addEventListener("resize", drawCharts);
    drawCharts();
  }

  function fillSelects() {
    const status = $("filter-status");
    for (const s of STATUSES) status.append(el("option", { value: s, text: s }));
    const types = Object.keys(state.types).sort();
    for (const select of [$("filter-type"), $("submit-type")]) {
      for (const t of types) {
        const text = state.types[t] && state.types[t] !== t ? `${t} — ${state.types[t]}` : t;
        select.append(el("option", { value: t, text }));
      }
    }
    onTypeChange();
  }

  function onTypeChange() {
    const area = $("submit-data");
    const template = JSON.stringify(TEMPLATES[$("submit-type").value] || {});
    if (area.value.trim() === "" || area.value === state.templateText) area.value = template;
    state.templateText = template;
  }

  // -- the task table --------------------------------------------------------------

  let listSeq = 0;
  async function loadList() {
    const seq = ++listSeq;
    const query = new URLSearchParams({ page: String(state.page), size: String(state.size) });
    for (const key of FILTER_KEYS) {
      if (state.filters[key]) query.set(key, state.filters[key]);
    }
    if (state.sort !== "-created") query.set("sort", state.sort);
    const askedAt = state.feedSeq;
    state.lastReload = Date.now();
    let data;
    try {
      data = await api("GET", `${API}/?${query}`);
    } catch (err) {
      if (seq === listSeq) toast(`Tasks: ${errorText(err)}`, true);
      return;
    }
    if (seq !== listSeq) return;
    state.total = data.total;
    const pages = Math.max(1, Math.ceil(data.total / state.size));
    if (state.page > pages) {
      state.page = pages;
      loadList();
      return;
    }
    for (const item of data.items) noteFinished(item);
    // A change the feed delivered while this request was under way is newer than the list.
    const items = data.items.map((item) => {
      const live = state.seen.get(item.celery_id);
      return live && live.seq > askedAt ? live.task : item;
    });
    renderRows(items);
  }

  function scheduleReload() {
    if (state.reloadTimer) return;
    const wait = Math.max(300, 1000 - (Date.now() - state.lastReload));
    state.reloadTimer = setTimeout(() => {
      state.reloadTimer = null;
      loadList();
    }, wait);
  }

  function renderRows(items) {
    const body = $("task-rows");
    const rows = new Map();
    const fragment = document.createDocumentFragment();
    for (const task of items) {
      const live = state.seen.get(task.celery_id);
      const row = { task, rev: live ? live.rev : 0, tr: null };
      row.tr = makeRow(row);
      rows.set(task.celery_id, row);
      fragment.append(row.tr);
    }
    body.replaceChildren(fragment);
    state.rows = rows;
    for (const id of [...state.checked]) if (!rows.has(id)) state.checked.delete(id);
    $("empty").hidden = items.length > 0;
    const pages = Math.max(1, Math.ceil(state.total / state.size));
    $("total").textContent = `${state.total} total`;
    $("page-info").textContent = `Page ${state.page} of ${pages}`;
    $("prev").disabled = state.page <= 1;
    $("next").disabled = state.page >= pages;
    updateBatch();
  }

  function makeRow(row) {
    const id = row.task.celery_id;
    const tr = el("tr", { dataset: { id } });
    tr.addEventListener("click", (ev) => {
      if (ev.target.closest("input, button")) return;
      selectTask(id);
    });
    fillRow(tr, row.task);
    return tr;
  }

  function fillRow(tr, task) {
    const id = task.celery_id;
    const operator = state.role === "operator";
    const cells = [];
    const pick = el("input", { type: "checkbox", class: "pick", title: "select" });
    pick.checked = state.checked.has(id);
    pick.disabled = TERMINAL.has(task.status);
    pick.addEventListener("change", () => {
      if (pick.checked) state.checked.add(id);
      else state.checked.delete(id);
      updateBatch();
    });
    cells.push(el("td", { class: "sel" }, operator ? pick : null));
    cells.push(el("td", { class: "id", title: id, text: id.slice(0, 8) }));
    cells.push(el("td", { class: "type", text: task.task_type || "" }));
    cells.push(el("td", { class: "name", title: label(task), text: label(task) }));
    cells.push(el("td", { class: "status" }, el("span", { class: `badge ${task.status}`, text: task.status })));
    cells.push(el("td", { class: "progress-cell" }, miniProgress(task)));
    cells.push(el("td", { class: "created muted", text: fmtTime(task.created_time) }));
    cells.push(el("td", { class: "worker muted", text: shortWorker(task.worker) }));
    const actions = el("td", { class: "actions operator-only" });
    if (operator && !TERMINAL.has(task.status)) {
      actions.append(el("button", {
        type: "button", class: "danger small revoke", text: "Revoke", title: "revoke (terminate)",
        onclick: () => revoke([id], false),
      }));
    }
    cells.push(actions);
    tr.replaceChildren(...cells);
    tr.classList.toggle("selected", state.selected === id);
    if (TERMINAL.has(task.status)) state.checked.delete(id);
  }

  function shortWorker(worker) {
    if (!worker) return "—";
    return String(worker).split("@")[0];
  }

  function miniProgress(task) {
    const p = task.progress;
    if (task.status === "SUCCESS") return el("span", { class: "muted", text: "done" });
    if (!p || !p.total) return el("span", { class: "muted", text: TERMINAL.has(task.status) ? "" : "—" });
    const pct = Math.max(0, Math.min(100, (100 * (p.done || 0)) / p.total));
    const bar = el("span", { class: "mini" }, el("span"));
    bar.firstChild.style.width = `${pct.toFixed(0)}%`;
    return el("span", {}, bar, el("span", { class: "muted", text: `${pct.toFixed(0)}%` }));
  }

  function startsWith(value, prefix) {
    return typeof value === "string" && value.toLowerCase().startsWith(prefix.toLowerCase());
  }

  function matchesFilters(task) {
    const f = state.filters;
    const created = task.created_time ? Date.parse(task.created_time) : NaN;
    return (!f.celery_id || f.celery_id === task.celery_id)
      && (!f.status || f.status === task.status)
      && (!f.task_type || f.task_type === task.task_type)
      && (!f.worker || f.worker === task.worker)
      && (!f.q || startsWith(task.name, f.q) || startsWith(task.target, f.q))
      && (!f.created_after || created >= Date.parse(f.created_after))
      && (!f.created_before || created < Date.parse(f.created_before));
  }

  function mayBelongOnPage(task) {
    if (!matchesFilters(task)) return false;
    if (state.sort !== "-created") return true; // its place depends on the order: ask again
    if (state.page !== 1) return false;
    if (state.rows.size < state.size) return true;
    let oldest = null;
    for (const row of state.rows.values()) {
      const created = row.task.created_time || "";
      if (oldest === null || created < oldest) oldest = created;
    }
    return (task.created_time || "") >= (oldest || "");
  }

  function updateBatch() {
    const button = $("batch-revoke");
    button.textContent = `Revoke selected (${state.checked.size})`;
    button.disabled = state.checked.size === 0;
    const boxes = [...$("task-rows").querySelectorAll("input.pick:not(:disabled)")];
    $("select-all").checked = boxes.length > 0 && boxes.every((b) => b.checked);
  }

  // -- the live feed ---------------------------------------------------------------

  function setFeedState(kind) {
    const badge = $("feed-state");
    badge.dataset.state = kind;
    badge.textContent = { live: "feed: live", connecting: "feed: connecting…", closed: "feed: offline" }[kind];
  }

  function connectFeed() {
    clearTimeout(state.feedTimer);
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    let url = `${proto}//${location.host}${API}/ws/`;
    if (state.since !== null) url += `?since=${state.since}`;
    setFeedState("connecting");
    const ws = new WebSocket(url);
    state.feed = ws;
    ws.addEventListener("open", () => ws.send(JSON.stringify({ action: "auth", token: state.token })));
    ws.addEventListener("message", (ev) => {
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch (err) {
        return;
      }
      onFeed(msg);
    });
    ws.addEventListener("close", (ev) => {
      if (state.feed !== ws) return;
      state.feed = null;
      setFeedState("closed");
      if (!state.role) return;
      if (ev.code === 4401) {
        logout("The live feed refused this token; log in again.");
        return;
      }
      const delay = Math.min(15000, 500 * 2 ** state.feedRetry);
      state.feedRetry += 1;
      state.feedTimer = setTimeout(connectFeed, delay);
    });
  }

  function onFeed(msg) {
    switch (msg.type) {
      case "change":
      case "replay":
        applyChange(msg.task, msg.rev);
        state.since = Math.max(state.since || 0, msg.rev);
        break;
      case "synced": {
        const first = state.since === null;
        state.since = Math.max(state.since || 0, msg.rev);
        state.feedRetry = 0;
        setFeedState("live");
        if (first) loadList(); // everything after this revision arrives live
        break;
      }
      case "heartbeat":
        state.since = Math.max(state.since || 0, msg.rev);
        break;
      case "error":
        console.warn("feed error", msg.code, msg.message, msg.data);
        break;
      default:
        break; // authenticated, subscribed, pong, resync (the socket closes; we resume by revision)
    }
  }

  function applyChange(task, rev) {
    const id = task.celery_id;
    state.feedSeq += 1;
    state.seen.delete(id);
    state.seen.set(id, { task, rev, seq: state.feedSeq });
    if (state.seen.size > MAX_SEEN) state.seen.delete(state.seen.keys().next().value);
    if (noteFinished(task)) requestDraw();
    const row = state.rows.get(id);
    if (row) {
      if (rev > row.rev) {
        const changed = row.task.status !== task.status;
        row.rev = rev;
        row.task = task;
        fillRow(row.tr, task);
        if (changed) flash(row.tr);
        updateBatch();
      }
    } else if (mayBelongOnPage(task)) {
      scheduleReload();
    }
    if (state.selected === id && rev > state.detailRev) {
      state.detailRev = rev;
      renderDetail(task);
    }
    if (task.status === "STARTED" || TERMINAL.has(task.status)) scheduleActive();
  }

  function flash(tr) {
    tr.classList.remove("flash");
    void tr.offsetWidth; // restart the animation
    tr.classList.add("flash");
  }

  // -- detail ----------------------------------------------------------------------

  async function selectTask(id) {
    state.selected = id;
    state.detailRev = -1;
    state.detailStats = "";
    for (const row of state.rows.values()) row.tr.classList.toggle("selected", row.task.celery_id === id);
    let task;
    try {
      task = await api("GET", `${API}/${encodeURIComponent(id)}/`);
    } catch (err) {
      toast(`Task ${id}: ${errorText(err)}`, true);
      return;
    }
    if (state.selected !== id) return;
    const live = state.seen.get(id);
    if (live && live.rev > (task.rev || 0)) task = live.task;
    state.detailRev = Math.max(state.detailRev, task.rev || 0);
    renderDetail(task);
  }

  function renderDetail(task) {
    $("detail-empty").hidden = true;
    $("detail-body").hidden = false;
    $("d-title").textContent = label(task) || task.task_type;
    $("d-title").title = label(task);
    const badge = $("d-status");
    badge.className = `badge ${task.status}`;
    badge.textContent = task.status;
    $("d-id").textContent = task.celery_id;

    const p = task.progress;
    const box = $("d-progress");
    if ((p && p.total) || task.status === "SUCCESS") {
      const pct = task.status === "SUCCESS" ? 100 : Math.min(100, (100 * (p.done || 0)) / p.total);
      box.hidden = false;
      $("d-progress-fill").style.width = `${pct.toFixed(1)}%`;
      $("d-progress-text").textContent = p && p.total
        ? `${p.stage || ""} ${p.done}/${p.total} (${pct.toFixed(0)}%)`
        : "100%";
    } else {
      box.hidden = true;
    }

    const fields = [
      ["task type", task.task_type],
      ["target", Array.isArray(task.target) ? task.target.join(", ") : task.target],
      ["worker", task.worker],
      ["created", fmtTime(task.created_time)],
      ["received", fmtTime(task.received_time)],
      ["started", fmtTime(task.start_time)],
      ["ended", fmtTime(task.end_time)],
      ["runtime", task.runtime != null ? `${Number(task.runtime).toFixed(2)} s` : null],
      ["retries", task.retries ? `${task.retries}${task.retry_reason ? ` (${task.retry_reason})` : ""}` : null],
      ["revoke", task.revoke ? JSON.stringify(task.revoke) : null],
      ["revision", task.rev],
    ];
    const dl = $("d-fields");
    dl.replaceChildren();
    for (const [name, value] of fields) {
      if (value === null || value === undefined || value === "") continue;
      dl.append(el("dt", { text: name }), el("dd", { text: String(value) }));
    }

    renderSubmitted(task);

    const revokeButton = $("d-revoke");
    revokeButton.disabled = TERMINAL.has(task.status);
    revokeButton.dataset.id = task.celery_id;

    const out = $("d-outcome");
    if (task.exception) {
      $("d-outcome-title").textContent = "Exception";
      out.textContent = task.traceback ? `${task.exception}\n\n${task.traceback}` : task.exception;
      out.classList.add("error-text");
    } else {
      $("d-outcome-title").textContent = "Result";
      out.classList.remove("error-text");
      // Celery events carry the result as its repr (a string); show that as it is.
      out.textContent = task.result != null
        ? typeof task.result === "string" ? task.result : JSON.stringify(task.result, null, 2)
        : TERMINAL.has(task.status) ? "—" : "(not finished)";
    }

    const stats = JSON.stringify(task.statistic || {});
    if (stats !== state.detailStats) {
      state.detailStats = stats;
      renderTabs(task);
    }
  }

  function shown(value) {
    if (value === null || value === undefined) return "";
    if (typeof value === "object") return JSON.stringify(value);
    return String(value);
  }

  function renderSubmitted(task) {
    const rows = [];
    for (const key of ["name", "target", "type", "task_tag"]) {
      if (task[key] !== null && task[key] !== undefined && task[key] !== "") rows.push([key, task[key]]);
    }
    const data = task.data && typeof task.data === "object" ? task.data : {};
    for (const [key, value] of Object.entries(data)) {
      if (!["name", "target", "type", "task_tag", "options", "task_id"].includes(key)) rows.push([key, value]);
    }
    const options = task.options && typeof task.options === "object" ? task.options : {};
    for (const [key, value] of Object.entries(options)) rows.push([`options.${key}`, value]);
    const table = $("d-data");
    table.replaceChildren(...rows.map(([key, value]) => el("tr", { dataset: { key } },
      el("th", { text: key }),
      el("td", {}, typeof value === "object" && value !== null
        ? el("code", { text: JSON.stringify(value, null, 1) }) : shown(value)))));
    $("d-submitted").hidden = rows.length === 0;
  }

  function resultCell(kind, column, value) {
    const td = el("td");
    if (value === null || value === undefined || value === "") return td;
    let text;
    if (column === "time" && typeof value === "number") text = fmtTime(new Date(value * 1000).toISOString());
    else if (Array.isArray(value)) {
      text = value.map((v) => {
        if (v && typeof v === "object") {
          if ("port" in v) return v.service ? `${v.port}/${v.service}` : String(v.port);
          if ("name" in v) return v.version ? `${v.name} ${v.version}` : String(v.name);
          return JSON.stringify(v);
        }
        return String(v);
      }).join(", ");
    } else text = shown(value);
    td.title = text;
    if (column === "severity") {
      td.append(el("span", { class: `sev ${String(value).toLowerCase()}`, text }));
    } else if (column === "status" && typeof value === "number") {
      const klass = value < 300 ? "ok" : value < 400 ? "redirect" : "error";
      td.append(el("span", { class: `http ${klass}`, text }));
    } else {
      td.textContent = text;
    }
    return td;
  }

  // Site screenshots: fetched with the token (an <img> cannot send it), shown as data: URLs
  // (the page's CSP allows data: images only); the link opens the full PNG from a blob: URL.
  let thumbUrls = [];

  function forgetThumbs() {
    for (const url of thumbUrls) URL.revokeObjectURL(url);
    thumbUrls = [];
  }

  function thumbCell(id, item) {
    const td = el("td", { class: "thumb" });
    const note = item.screenshot;
    if (!note || typeof note !== "object") return td;
    if (note.skipped) {
      td.append(el("span", { class: "thumb-none", text: "—", title: `no screenshot: ${note.skipped}` }));
      return td;
    }
    const url = `${API}/${encodeURIComponent(id)}/results/site/${encodeURIComponent(item._id)}/screenshot.png`;
    const img = el("img", { alt: `screenshot of ${item.site}`, width: "96", height: String(Math.round(96 * note.height / note.width) || 60) });
    const link = el("a", { target: "_blank", rel: "noopener", title: `${item.site} (${note.width}×${note.height})` }, img);
    td.append(link);
    loadThumb(url, img, link);
    return td;
  }

  async function loadThumb(url, img, link) {
    let blob;
    try {
      const resp = await fetch(url, { headers: state.token ? { Authorization: `Bearer ${state.token}` } : {} });
      if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
      blob = await resp.blob();
    } catch (err) {
      img.replaceWith(el("span", { class: "thumb-none", text: "—", title: `screenshot unavailable (${err.message})` }));
      return;
    }
    const href = URL.createObjectURL(blob);
    thumbUrls.push(href);
    link.href = href;
    const reader = new FileReader();
    reader.onload = () => { img.src = reader.result; img.dataset.loaded = "true"; };
    reader.readAsDataURL(blob);
  }

  function resultsTable(kind, items, id) {
    const columns = RESULT_COLUMNS[kind]
      || [...new Set(items.flatMap((i) => Object.keys(i)))].filter((k) => !["_id", "task_id", "partial"].includes(k));
    // The screenshot column shows only when a site of the page has a screenshot note.
    const thumbs = kind === "site" && items.some((i) => i.screenshot && typeof i.screenshot === "object");
    return el("table", { class: "results-table", dataset: { kind } },
      el("thead", {}, el("tr", {}, thumbs ? el("th", { text: "screenshot" }) : null, ...columns.map((c) => el("th", { text: c })))),
      el("tbody", {}, ...items.map((item) => el("tr", {},
        thumbs ? thumbCell(id, item) : null, ...columns.map((c) => resultCell(kind, c, item[c]))))));
  }

  async function download(format) {
    const r = state.results;
    if (!r.kind || !r.id) return;
    const url = `${API}/${encodeURIComponent(r.id)}/results/?kind=${encodeURIComponent(r.kind)}&format=${format}`;
    let resp;
    try {
      resp = await fetch(url, { headers: state.token ? { Authorization: `Bearer ${state.token}` } : {}, cache: "no-store" });
    } catch (err) {
      toast("Download: the API is unreachable", true);
      return;
    }
    if (!resp.ok) {
      let env = null;
      try { env = await resp.json(); } catch (err) { env = null; }
      toast(`Download: ${errorText(new ApiError(resp.status, env))}`, true);
      return;
    }
    const blob = await resp.blob();
    const link = el("a", { href: URL.createObjectURL(blob), download: `${r.id}-${r.kind}.${format}` });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  }

  function renderTabs(task) {
    const stats = task.statistic || {};
    const kinds = KINDS.filter((k) => Number(stats[k]) > 0);
    const tabs = $("d-tabs");
    tabs.replaceChildren();
    state.results = { kind: null, page: 1, total: 0 };
    if (kinds.length === 0) {
      $("d-results-body").replaceChildren(el("p", { text: "No result documents recorded." }));
      $("r-pager").hidden = true;
      $("d-downloads").hidden = true;
      return;
    }
    $("r-pager").hidden = false;
    $("d-downloads").hidden = false;
    for (const kind of kinds) {
      tabs.append(el("button", {
        type: "button", role: "tab", "aria-selected": "false", dataset: { kind },
        text: `${kind} (${stats[kind]})`, onclick: () => loadResults(task.celery_id, kind, 1),
      }));
    }
    loadResults(task.celery_id, kinds[0], 1);
  }

  async function loadResults(id, kind, page) {
    for (const tab of $("d-tabs").children) tab.setAttribute("aria-selected", String(tab.dataset.kind === kind));
    state.results = { kind, page, total: state.results.total, id };
    let data;
    try {
      data = await api("GET", `${API}/${encodeURIComponent(id)}/results/?kind=${encodeURIComponent(kind)}&page=${page}&size=10`);
    } catch (err) {
      $("d-results-body").replaceChildren(el("p", { text: errorText(err) }));
      return;
    }
    if (state.selected !== id || state.results.kind !== kind) return;
    state.results.total = data.total;
    const pages = Math.max(1, Math.ceil(data.total / 10));
    forgetThumbs();
    $("d-results-body").replaceChildren(data.items.length
      ? resultsTable(kind, data.items, id) : el("p", { text: "(none)" }));
    $("r-info").textContent = `${kind}: page ${page} of ${pages} · ${data.total}`;
    $("r-prev").disabled = page <= 1;
    $("r-next").disabled = page >= pages;
  }

  // -- actions ---------------------------------------------------------------------

  async function revoke(ids, batch) {
    if (ids.length === 0) return;
    const what = ids.length === 1 ? `task ${ids[0]}` : `${ids.length} tasks`;
    if (!window.confirm(`Revoke ${what}? Running tasks are terminated.`)) return;
    try {
      if (!batch) {
        await api("POST", `${API}/revoke/`, { celery_id: ids[0], terminate: true });
        toast(`Revoke sent for ${ids[0].slice(0, 8)}`);
      } else {
        const data = await api("POST", `${API}/batch_revoke/`, { celery_ids: ids, terminate: true });
        const ok = data.results.filter((r) => r.code === 200).length;
        const failed = data.results.filter((r) => r.code !== 200);
        const notes = failed.slice(0, 3).map((r) => `${r.celery_id.slice(0, 8)}: ${r.message}`).join("; ");
        toast(`Revoked ${ok} of ${data.results.length}${failed.length ? ` — ${notes}` : ""}`, failed.length > 0);
        state.checked.clear();
        for (const row of state.rows.values()) fillRow(row.tr, row.task);
        updateBatch();
      }
    } catch (err) {
      toast(`Revoke: ${errorText(err)}`, true);
    }
  }

  async function submitTask(ev) {
    ev.preventDefault();
    const error = $("submit-error");
    error.textContent = "";
    const taskType = $("submit-type").value;
    let data;
    try {
      data = JSON.parse($("submit-data").value || "{}");
    } catch (err) {
      error.textContent = `Data is not valid JSON: ${err.message}`;
      return;
    }
    if (data === null || typeof data !== "object" || Array.isArray(data)) {
      error.textContent = "Data must be a JSON object.";
      return;
    }
    const button = $("submit-button");
    button.disabled = true;
    try {
      const created = await api("POST", `${API}/`, { task_type: taskType, data });
      toast(`Submitted ${taskType}: ${created.celery_id}`);
      const task = {
        celery_id: created.celery_id, status: created.status, task_type: taskType,
        name: data.name, target: data.target, created_time: new Date().toISOString(),
      };
      if (!state.rows.has(task.celery_id) && matchesFilters(task) && state.page === 1) {
        const live = state.seen.get(task.celery_id);
        const row = { task: live ? live.task : task, rev: live ? live.rev : 0, tr: null };
        row.tr = makeRow(row);
        state.rows.set(task.celery_id, row);
        $("task-rows").prepend(row.tr);
        $("empty").hidden = true;
        state.total += 1;
        $("total").textContent = `${state.total} total`;
        flash(row.tr);
      }
      scheduleReload();
      selectTask(created.celery_id);
    } catch (err) {
      error.textContent = errorText(err);
    } finally {
      button.disabled = false;
    }
  }

  // -- active ----------------------------------------------------------------------

  function scheduleActive() {
    if (state.activeTimer) return;
    const wait = Math.max(800, 3000 - (Date.now() - state.lastActive));
    state.activeTimer = setTimeout(() => {
      state.activeTimer = null;
      loadActive();
    }, wait);
  }

  let activeSeq = 0;
  async function loadActive() {
    const seq = ++activeSeq;
    state.lastActive = Date.now();
    let data;
    try {
      data = await api("GET", `${API}/active/`);
    } catch (err) {
      if (seq === activeSeq) $("active-count").textContent = errorText(err);
      return;
    }
    if (seq !== activeSeq) return;
    const items = data.active_tasks || [];
    const body = $("active-rows");
    body.replaceChildren(...items.map((t) => {
      const started = typeof t.time_start === "number" && t.time_start > 1e9
        ? fmtTime(new Date(t.time_start * 1000).toISOString()) : "—";
      const tr = el("tr", { dataset: { id: t.id || "" } },
        el("td", { class: "id", title: t.id || "", text: String(t.id || "").slice(0, 8) }),
        el("td", { text: shortType(t.name || t.type) }),
        el("td", { class: "muted", text: shortWorker(t.worker || t.hostname) }),
        el("td", { text: t.state || "" }),
        el("td", { class: "muted", text: started }));
      if (t.id) tr.addEventListener("click", () => selectTask(t.id));
      return tr;
    }));
    $("active-empty").hidden = items.length > 0;
    $("active-count").textContent = `${items.length} now`;
  }

  // -- charts ----------------------------------------------------------------------

  function noteFinished(task) {
    if (!TERMINAL.has(task.status) || state.finished.has(task.celery_id)) return false;
    const t = task.end_time ? Date.parse(task.end_time) : Date.now();
    state.finished.set(task.celery_id, { t: Number.isNaN(t) ? Date.now() : t, status: task.status });
    return true;
  }

  async function seedFinished() {
    const pages = await Promise.all(["SUCCESS", "FAILURE", "REVOKED"].map((status) =>
      api("GET", `${API}/?status=${status}&size=100`).catch(() => ({ items: [] }))));
    for (const page of pages) for (const item of page.items) noteFinished(item);
    drawCharts();
  }

  let sampling = false;
  async function sampleStates() {
    if (document.hidden || !state.role || sampling) return;
    sampling = true;
    let totals;
    try {
      totals = await Promise.all(STATUSES.map((status) =>
        api("GET", `${API}/?status=${status}&size=1`).then((d) => d.total)));
    } catch (err) {
      return;
    } finally {
      sampling = false;
    }
    const counts = {};
    STATUSES.forEach((s, i) => { counts[s] = totals[i]; });
    state.samples.push({ t: Date.now(), counts });
    if (state.samples.length > MAX_SAMPLES) state.samples.shift();
    drawCharts();
  }

  let drawPending = false;
  function requestDraw() {
    if (drawPending) return;
    drawPending = true;
    requestAnimationFrame(() => { drawPending = false; drawCharts(); });
  }

  function drawCharts() {
    if ($("app").hidden) return;
    drawThroughput($("chart-throughput"));
    drawStates($("chart-states"));
  }

  function canvas2d(canvas) {
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth || canvas.width;
    const h = canvas.clientHeight || canvas.height;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    ctx.font = "11px system-ui, sans-serif";
    ctx.textBaseline = "middle";
    return { ctx, w, h };
  }

  function niceMax(value) {
    if (value <= 4) return 4;
    const magnitude = 10 ** Math.floor(Math.log10(value));
    for (const step of [1, 2, 2.5, 5, 10]) if (step * magnitude >= value) return step * magnitude;
    return value;
  }

  function axes(ctx, box, max, w) {
    ctx.strokeStyle = "#e3e6eb";
    ctx.fillStyle = "#6b7280";
    ctx.lineWidth = 1;
    ctx.textAlign = "right";
    for (let i = 0; i <= 2; i += 1) {
      const value = (max * i) / 2;
      const y = Math.round(box.bottom - ((box.bottom - box.top) * i) / 2) + 0.5;
      ctx.beginPath();
      ctx.moveTo(box.left, y);
      ctx.lineTo(w - box.right, y);
      ctx.stroke();
      ctx.fillText(String(Math.round(value)), box.left - 5, y);
    }
  }

  function legend(ctx, names, w) {
    let x = w - 6;
    ctx.textAlign = "right";
    for (const name of [...names].reverse()) {
      ctx.fillStyle = "#6b7280";
      ctx.fillText(name, x, 7);
      x -= ctx.measureText(name).width + 4;
      ctx.fillStyle = color(name);
      ctx.fillRect(x - 8, 3, 8, 8);
      x -= 18;
    }
  }

  function hhmm(t) {
    const d = new Date(t);
    return `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}`;
  }

  function drawThroughput(canvas) {
    const { ctx, w, h } = canvas2d(canvas);
    const series = ["SUCCESS", "FAILURE", "REVOKED"];
    const minute = 60000;
    const n = 30;
    const end = Math.floor(Date.now() / minute) * minute + minute;
    const begin = end - n * minute;
    const buckets = Array.from({ length: n }, () => ({ SUCCESS: 0, FAILURE: 0, REVOKED: 0 }));
    for (const f of state.finished.values()) {
      if (f.t >= begin && f.t < end) buckets[Math.floor((f.t - begin) / minute)][f.status] += 1;
    }
    const max = niceMax(Math.max(...buckets.map((b) => b.SUCCESS + b.FAILURE + b.REVOKED)));
    const box = { left: 34, right: 6, top: 20, bottom: h - 18 };
    axes(ctx, box, max, w);
    legend(ctx, series, w);
    const slot = (w - box.left - box.right) / n;
    const scale = (box.bottom - box.top) / max;
    buckets.forEach((b, i) => {
      let y = box.bottom;
      for (const s of series) {
        if (!b[s]) continue;
        const height = b[s] * scale;
        ctx.fillStyle = color(s);
        ctx.fillRect(box.left + i * slot + 1, y - height, Math.max(1, slot - 2), height);
        y -= height;
      }
    });
    ctx.fillStyle = "#6b7280";
    ctx.textAlign = "center";
    for (let i = 0; i <= n; i += 10) {
      ctx.textAlign = i === 0 ? "left" : i === n ? "right" : "center";
      ctx.fillText(hhmm(begin + i * minute), box.left + i * slot, h - 8);
    }
  }

  function drawStates(canvas) {
    const { ctx, w, h } = canvas2d(canvas);
    const order = ["SUCCESS", "FAILURE", "REVOKED", "PENDING", "RETRY", "STARTED"];
    const samples = state.samples;
    const box = { left: 34, right: 6, top: 20, bottom: h - 18 };
    legend(ctx, order, w);
    if (samples.length === 0) {
      ctx.fillStyle = "#6b7280";
      ctx.textAlign = "center";
      ctx.fillText("collecting…", w / 2, h / 2);
      return;
    }
    // The last sample holds for one sampling period, so it is visible as soon as it is drawn.
    const now = samples[samples.length - 1].t + SAMPLE_MS;
    const t0 = Math.min(samples[0].t, now - 60000);
    const span = Math.max(1, now - t0);
    const x = (t) => box.left + ((t - t0) / span) * (w - box.left - box.right);
    const totals = samples.map((s) => order.reduce((sum, k) => sum + (s.counts[k] || 0), 0));
    const max = niceMax(Math.max(...totals));
    axes(ctx, box, max, w);
    const y = (v) => box.bottom - (v / max) * (box.bottom - box.top);
    // Each sample holds until the next one: a stepped, stacked area.
    const edges = samples.map((s, i) => [x(s.t), x(i + 1 < samples.length ? samples[i + 1].t : now)]);
    const below = samples.map(() => 0);
    for (const name of order) {
      const above = samples.map((s, i) => below[i] + (s.counts[name] || 0));
      if (above.every((v, i) => v === below[i])) continue;
      ctx.beginPath();
      ctx.moveTo(edges[0][0], y(above[0]));
      samples.forEach((s, i) => {
        ctx.lineTo(edges[i][0], y(above[i]));
        ctx.lineTo(edges[i][1], y(above[i]));
      });
      for (let i = samples.length - 1; i >= 0; i -= 1) {
        ctx.lineTo(edges[i][1], y(below[i]));
        ctx.lineTo(edges[i][0], y(below[i]));
      }
      ctx.closePath();
      ctx.fillStyle = color(name);
      ctx.globalAlpha = 0.8;
      ctx.fill();
      ctx.globalAlpha = 1;
      above.forEach((v, i) => { below[i] = v; });
    }
    ctx.fillStyle = "#6b7280";
    ctx.textAlign = "left";
    ctx.fillText(hhmm(t0), box.left, h - 8);
    ctx.textAlign = "right";
    ctx.fillText(hhmm(now), w - box.right, h - 8);
  }

  // -- wiring ----------------------------------------------------------------------

  function wire() {
    $("login-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const token = $("token").value.trim();
      $("login-error").textContent = "";
      $("login-button").disabled = true;
      try {
        await login(token);
        $("token").value = "";
      } catch (err) {
        state.token = null;
        $("login-error").textContent = err.envelope && err.envelope.code === 401
          ? "This token is not accepted." : errorText(err);
      } finally {
        $("login-button").disabled = false;
      }
    });
    $("logout").addEventListener("click", () => logout(""));
    $("filters").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const when = (id) => {
        const value = $(id).value;
        const t = value ? new Date(value) : null; // datetime-local: the browser's local time
        return t && !Number.isNaN(t.getTime()) ? t.toISOString() : "";
      };
      state.filters = {
        q: $("filter-q").value.trim(),
        celery_id: $("filter-id").value.trim(),
        status: $("filter-status").value,
        task_type: $("filter-type").value,
        worker: $("filter-worker").value.trim(),
        created_after: when("filter-after"),
        created_before: when("filter-before"),
      };
      state.sort = $("sort").value;
      state.size = Number($("page-size").value) || 20;
      state.page = 1;
      loadList();
    });
    $("filter-clear").addEventListener("click", () => {
      for (const id of ["filter-q", "filter-id", "filter-status", "filter-type", "filter-worker", "filter-after", "filter-before"]) {
        $(id).value = "";
      }
      $("sort").value = "-created";
      state.filters = {};
      state.sort = "-created";
      state.page = 1;
      loadList();
    });
    $("sort").addEventListener("change", () => {
      state.sort = $("sort").value;
      state.page = 1;
      loadList();
    });
    for (const link of document.querySelectorAll("#d-downloads a.download")) {
      link.addEventListener("click", (ev) => {
        ev.preventDefault();
        download(link.dataset.format);
      });
    }
    $("page-size").addEventListener("change", () => {
      state.size = Number($("page-size").value) || 20;
      state.page = 1;
      loadList();
    });
    $("prev").addEventListener("click", () => { state.page = Math.max(1, state.page - 1); loadList(); });
    $("next").addEventListener("click", () => { state.page += 1; loadList(); });
    $("select-all").addEventListener("change", (ev) => {
      for (const box of $("task-rows").querySelectorAll("input.pick:not(:disabled)")) {
        box.checked = ev.target.checked;
        const id = box.closest("tr").dataset.id;
        if (box.checked) state.checked.add(id);
        else state.checked.delete(id);
      }
      updateBatch();
    });
    $("batch-revoke").addEventListener("click", () => revoke([...state.checked], true));
    $("d-revoke").addEventListener("click", (ev) => revoke([ev.target.dataset.id], false));
    $("submit-form").addEventListener("submit", submitTask);
    $("submit-type").addEventListener("change", onTypeChange);
    $("active-refresh").addEventListener("click", loadActive);
    $("r-prev").addEventListener("click", () => {
      const r = state.results;
      if (r.kind && r.page > 1) loadResults(r.id, r.kind, r.page - 1);
    });
    $("r-next").addEventListener("click", () => {
      const r = state.results;
      if (r.kind) loadResults(r.id, r.kind, r.page + 1);
    });
    document.addEventListener("visibilitychange", () => { if (!document.hidden && state.role) sampleStates(); });
  }

  document.addEventListener("DOMContentLoaded", async () => {
    wire();
    const saved = sessionStorage.getItem(TOKEN_KEY) || "";
    if (!saved) {
      // With auth.enabled: false the API takes anyone for the operator: no login form then.
      let open = false;
      try {
        open = (await api("GET", "/api/health/")).auth === "none";
      } catch (err) {
        // API unreachable: the login form says so when it is used
      }
      if (!open) {
        showLogin();
        return;
      }
    }
    try {
      await login(saved);
    } catch (err) {
      sessionStorage.removeItem(TOKEN_KEY);
      state.token = null;
      showLogin();
      if (!(err.envelope && err.envelope.code === 401)) $("login-error").textContent = errorText(err);
    }
  });
})();
