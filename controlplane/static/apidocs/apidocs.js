// Renders /api/openapi.json as a reference page: no framework, no CDN (the host may be offline).
"use strict";

const METHODS = ["get", "post", "put", "delete", "patch"];

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function resolve(spec, schema) {
  let current = schema;
  for (let depth = 0; current && current.$ref && depth < 20; depth += 1) {
    const parts = current.$ref.replace(/^#\//, "").split("/");
    current = parts.reduce((node, part) => (node ? node[part] : undefined), spec);
  }
  return current || {};
}

function example(spec, schema, depth) {
  const s = resolve(spec, schema);
  if (depth > 6) return null;
  if (s.example !== undefined) return s.example;
  if (s.enum) return s.enum[0];
  if (s.oneOf || s.anyOf) return example(spec, (s.oneOf || s.anyOf)[0], depth + 1);
  if (s.allOf) return Object.assign({}, ...s.allOf.map((part) => example(spec, part, depth + 1)));
  const type = Array.isArray(s.type) ? s.type.find((t) => t !== "null") : s.type;
  if (type === "object" || s.properties) {
    const out = {};
    for (const [key, value] of Object.entries(s.properties || {})) out[key] = example(spec, value, depth + 1);
    return out;
  }
  if (type === "array") return [example(spec, s.items || {}, depth + 1)];
  if (type === "integer" || type === "number") return s.minimum !== undefined ? s.minimum : 0;
  if (type === "boolean") return true;
  if (type === "string") return s.format === "uuid" ? "c6a1e0b3-5263-4d8c-ae38-f5c4f9ad7c32" : "string";
  return null;
}

function parameters(spec, params) {
  if (!params || params.length === 0) return null;
  const rows = params.map((raw) => {
    const p = resolve(spec, raw);
    const schema = resolve(spec, p.schema || {});
    return el("tr", {}, el("td", {}, el("code", {}, p.name)), el("td", {}, p.in),
      el("td", {}, p.required ? "yes" : "no"), el("td", {}, schema.type || ""), el("td", {}, p.description || ""));
  });
  return el("table", {}, el("tr", {}, ...["name", "in", "required", "type", "description"].map((h) => el("th", {}, h))), ...rows);
}

function body(spec, requestBody) {
  if (!requestBody) return null;
  const rb = resolve(spec, requestBody);
  const media = (rb.content || {})["application/json"];
  if (!media) return null;
  return el("div", {}, el("h4", {}, "Request body"),
    el("pre", {}, JSON.stringify(example(spec, media.schema || {}, 0), null, 2)));
}

function responses(spec, all) {
  const rows = Object.entries(all || {}).map(([status, raw]) => {
    const r = resolve(spec, raw);
    return el("tr", {}, el("td", {}, el("code", {}, status)), el("td", {}, r.description || ""));
  });
  return el("div", {}, el("h4", {}, "Responses"), el("table", {}, ...rows));
}

function render(spec) {
  const info = spec.info || {};
  document.getElementById("title").textContent = `${info.title || "API"} ${info.version || ""}`.trim();
  document.getElementById("summary").textContent = info.description || "";
  const toc = document.getElementById("toc");
  const main = document.getElementById("operations");
  let index = 0;
  for (const [path, item] of Object.entries(spec.paths || {})) {
    for (const method of METHODS) {
      const op = item[method];
      if (!op) continue;
      index += 1;
      const id = `op-${index}`;
      toc.append(el("a", { href: `#${id}` }, `${method.toUpperCase()} ${path}`));
      main.append(el("section", { class: "op", id },
        el("h3", {}, el("span", { class: `method ${method}` }, method.toUpperCase()), el("span", { class: "path" }, path)),
        op.summary ? el("p", {}, op.summary) : null,
        op.description ? el("p", { class: "muted" }, op.description) : null,
        parameters(spec, [...(item.parameters || []), ...(op.parameters || [])]),
        body(spec, op.requestBody),
        responses(spec, op.responses)));
    }
  }
  document.body.dataset.operations = String(index);
}

fetch("/api/openapi.json", { headers: { Accept: "application/json" } })
  .then((resp) => { if (!resp.ok) throw new Error(`HTTP ${resp.status}`); return resp.json(); })
  .then(render)
  .catch((err) => {
    const summary = document.getElementById("summary");
    summary.textContent = `Could not load /api/openapi.json: ${err.message}`;
    summary.className = "error";
  });
