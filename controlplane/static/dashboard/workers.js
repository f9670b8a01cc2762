/* controlplane workers page: plain JavaScript, no build, no third-party code.
 *
 * Reads GET /api/workers/ and GET /api/queues/ every few seconds (the API caches its view,
 * so this adds no broadcasts to the workers); operators get the controls (pool, consumers,
 * shutdown), which POST to /api/workers/{name}/... and show what the worker replied.
 * The token is the tasks page's (sessionStorage, this tab only). Every value from the API
 * is put into the page with textContent, never as HTML.
 */
"use strict";

(function () {
  const TOKEN_KEY = "controlplane.token";
  const MESSAGE_KEY = "controlplane.message";
  const REFRESH_MS = 3000;

  const $ = (id) => document.getElementById(id);

  const state = { token: null, role: null, timer: null, busy: false, workers: [] };

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else node.setAttribute(key, value);
    }
    for (const child of children) if (child != null) node.append(child);
    return node;
  }

  function show(value) {
    return value === null || value === undefined || value === "" ? "—" : String(value);
  }

  function age(seconds) {
    if (seconds === null || seconds === undefined) return "never";
    if (seconds < 60) return `${seconds.toFixed(1)} s ago`;
    if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
    return `${Math.floor(seconds / 3600)} h ago`;
  }

  function clock(iso) {
    const d = new Date(iso);
    return Number.isNaN(d.getTime()) ? "—" : d.toLocaleTimeString();
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

  function errorText(err) {
    const env = err && err.envelope;
    if (!env) return String(err && err.message ? err.message : err);
    let text = `${env.message || "Error"} (${env.code})`;
    const data = env.data || {};
    if (data.field) text += `: ${data.field} ${data.reason || ""}`;
    else if (data.reason) text += `: ${data.reason}`;
    else if (data.detail) text += `: ${data.detail}`;
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

  // -- login -----------------------------------------------------------------------

  async function login(token) {
    state.token = token;
    const me = await api("GET", "/api/whoami/");
    state.role = me.role;
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    $("logout").hidden = !token;
    $("who").replaceChildren(el("b", { text: me.name }), ` · ${me.role}`);
    document.body.classList.toggle("viewer", me.role !== "operator");
    document.body.classList.toggle("operator", me.role === "operator");
    $("login").hidden = true;
    $("app").hidden = false;
    $("session").hidden = false;
    refresh();
    state.timer = setInterval(() => { if (!document.hidden) refresh(); }, REFRESH_MS);
  }

  function logout(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    if (message) sessionStorage.setItem(MESSAGE_KEY, message);
    state.role = null;
    clearInterval(state.timer);
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

  // -- the views -------------------------------------------------------------------

  async function refresh() {
    if (state.busy) return;
    state.busy = true;
    const status = $("refresh-state");
    try {
      const [workers, queues] = await Promise.all([api("GET", "/api/workers/"), api("GET", "/api/queues/")]);
      renderWorkers(workers);
      renderQueues(queues);
      status.dataset.state = "ok";
      status.textContent = `updated ${clock(workers.updated)}`;
    } catch (err) {
      status.dataset.state = "error";
      status.textContent = `refresh failed: ${errorText(err)}`;
    } finally {
      state.busy = false;
    }
  }

  function cell(tr, key, cls) {
    let td = tr.querySelector(`td[data-key="${key}"]`);
    if (!td) {
      td = el("td", { dataset: { key }, class: cls || key });
      tr.append(td);
    }
    return td;
  }

  function setText(td, text) {
    if (td.textContent !== text) td.textContent = text;
  }

  function workerRow(name) {
    const tbody = $("worker-rows");
    let tr = tbody.querySelector(`tr[data-name="${CSS.escape(name)}"]`);
    if (tr) return tr;
    tr = el("tr", { dataset: { name } });
    for (const key of ["name", "state", "heartbeat", "pool"]) cell(tr, key);
    for (const key of ["concurrency", "processed", "active", "reserved"]) cell(tr, key, `num ${key}`);
    for (const key of ["load", "queues", "version"]) cell(tr, key);
    const controls = cell(tr, "controls", "controls operator-only");
    controls.append(
      el("button", { type: "button", class: "small ghost grow", title: "add a pool process", text: "+1" }),
      el("button", { type: "button", class: "small ghost shrink", title: "remove a pool process", text: "−1" }),
      el("button", { type: "button", class: "small danger shutdown", text: "Shut down" }),
    );
    return tr;
  }

  function renderQueueChips(td, worker) {
    const queues = worker.queues || [];
    const signature = JSON.stringify(queues);
    if (td.dataset.signature === signature) return;
    td.dataset.signature = signature;
    if (!worker.queues) {
      td.replaceChildren("—");
      return;
    }
    td.replaceChildren(
      ...queues.map((q) =>
        el(
          "span",
          { class: "chip", dataset: { queue: q } },
          el("span", { class: "chip-name", text: q }),
          el("button", { type: "button", class: "cancel-queue operator-only", title: `stop consuming ${q}`, dataset: { queue: q }, text: "×" }),
        ),
      ),
    );
  }

  function renderWorkers(data) {
    const tbody = $("worker-rows");
    const list = data.workers || [];
    state.workers = list;
    const keep = new Set();
    for (const w of list) {
      const tr = workerRow(w.name);
      keep.add(tr);
      tr.classList.toggle("offline", w.state !== "online");
      setText(cell(tr, "name"), w.name);
      const stateCell = cell(tr, "state");
      const badge = stateCell.firstElementChild || stateCell.appendChild(el("span"));
      badge.className = `badge state-${w.state}`;
      setText(badge, w.state);
      setText(cell(tr, "heartbeat"), age(w.heartbeat_age));
      setText(cell(tr, "pool"), show(w.pool));
      for (const key of ["concurrency", "processed", "active", "reserved"]) setText(cell(tr, key), show(w[key]));
      setText(cell(tr, "load"), Array.isArray(w.loadavg) ? w.loadavg.map((v) => Number(v).toFixed(2)).join(" ") : "—");
      renderQueueChips(cell(tr, "queues"), w);
      setText(cell(tr, "version"), w.sw_ver ? `${w.sw_ident || "celery"} ${w.sw_ver}` : "—");
      for (const button of tr.querySelectorAll("td.controls button")) button.disabled = w.state !== "online";
      tbody.append(tr); // in the API's order: online first, then by name
    }
    for (const tr of [...tbody.children]) if (!keep.has(tr)) tr.remove();
    $("workers-empty").hidden = list.length > 0;
    $("workers-summary").textContent = `${data.online} of ${data.total} online`;
    const select = $("consumer-worker");
    const online = list.filter((w) => w.state === "online").map((w) => w.name);
    const current = select.value;
    if (JSON.stringify([...select.options].map((o) => o.value)) !== JSON.stringify(online)) {
      select.replaceChildren(...online.map((n) => el("option", { value: n, text: n })));
      if (online.includes(current)) select.value = current;
    }
  }

  function renderQueues(data) {
    const tbody = $("queue-rows");
    const list = data.queues || [];
    tbody.replaceChildren(
      ...list.map((q) => {
        const tr = el("tr", { dataset: { queue: q.name } });
        tr.classList.toggle("unconsumed", q.consumer_count === 0);
        tr.append(
          el("td", { class: "name", text: q.name }),
          el("td", { class: "num depth", text: show(q.depth) }),
          el("td", { class: "consumers", text: q.consumers.length ? q.consumers.join(", ") : "none" }),
          el("td", { class: "num", text: show(q.broker_consumers) }),
        );
        return tr;
      }),
    );
    $("queues-empty").hidden = list.length > 0;
    const waiting = list.reduce((n, q) => n + (q.depth || 0), 0);
    $("queues-summary").textContent = `${waiting} message${waiting === 1 ? "" : "s"} waiting · ${data.broker}`;
  }

  // -- controls --------------------------------------------------------------------

  async function control(name, action, body, what) {
    try {
      const out = await api("POST", `/api/workers/${encodeURIComponent(name)}/${action}`, body);
      const reply = out.reply || {};
      const said = reply.ok || reply.error || (action === "shutdown" ? "shutdown requested" : "no reply");
      toast(out.ok ? `${name}: ${said}` : `${name}: ${what} refused: ${said}`, !out.ok);
    } catch (err) {
      toast(`${name}: ${what}: ${errorText(err)}`, true);
    }
    refresh();
  }

  function onWorkerClick(ev) {
    const button = ev.target.closest("button");
    const tr = ev.target.closest("tr[data-name]");
    if (!button || !tr || button.disabled) return;
    const name = tr.dataset.name;
    if (button.classList.contains("grow")) control(name, "pool", { grow: 1 }, "pool +1");
    else if (button.classList.contains("shrink")) control(name, "pool", { shrink: 1 }, "pool −1");
    else if (button.classList.contains("cancel-queue")) {
      const queue = button.dataset.queue;
      control(name, "consumers", { cancel: queue }, `cancel consumer ${queue}`);
    } else if (button.classList.contains("shutdown")) {
      if (confirm(`Shut down ${name}? It finishes its running tasks, then exits (it is not restarted by the API).`)) {
        control(name, "shutdown", undefined, "shutdown");
      }
    }
  }

  function onAddConsumer(ev) {
    ev.preventDefault();
    const name = $("consumer-worker").value;
    const queue = $("consumer-queue").value.trim();
    if (!name || !queue) {
      toast("Pick an online worker and name a queue.", true);
      return;
    }
    control(name, "consumers", { add: queue }, `add consumer ${queue}`);
  }

  function wire() {
    $("login-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      $("login-error").textContent = "";
      try {
        await login($("token").value.trim());
      } catch (err) {
        state.token = null;
        $("login-error").textContent =
          err.envelope && err.envelope.code === 401 ? "That token was not accepted." : errorText(err);
      }
    });
    $("logout").addEventListener("click", () => logout());
    $("worker-rows").addEventListener("click", onWorkerClick);
    $("consumer-form").addEventListener("submit", onAddConsumer);
    document.addEventListener("visibilitychange", () => { if (!document.hidden && state.role) refresh(); });
  }

  document.addEventListener("DOMContentLoaded", async () => {
    wire();
    const saved = sessionStorage.getItem(TOKEN_KEY) || "";
    if (!saved) {
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
