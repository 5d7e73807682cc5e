// The IVR flow editor: validates the YAML as the admin types, shows errors inline and the diagram,
// publishes, lists versions (with roll back) and the audit log. Same-origin JSON API only.
"use strict";
(function () {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const flowName = document.body.dataset.flow;
  const $ = (id) => document.getElementById(id);
  const editor = $("flow-yaml");
  let timer = null;
  let seq = 0;

  async function api(method, url, body) {
    const opts = { method, headers: { Accept: "application/json" }, credentials: "same-origin" };
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.headers["X-CSRF-Token"] = csrf;
      opts.body = JSON.stringify(body);
    }
    const resp = await fetch(url, opts);
    let data = {};
    try { data = await resp.json(); } catch (e) { data = { error: resp.statusText }; }
    return { status: resp.status, data };
  }

  function line(cls, text) {
    const p = document.createElement("p");
    p.className = cls;
    p.textContent = text;
    return p;
  }

  function showReport(report) {
    const box = $("validation");
    box.replaceChildren();
    if (report.error && !report.errors) { box.append(line("error", report.error)); return; }
    if (report.ok) box.append(line("ok", "Valid: ready to publish."));
    for (const e of report.errors || []) box.append(line("error", "✖ " + e.text));
    for (const w of report.warnings || []) box.append(line("warning", "⚠ " + w.text));
    // The SVG is rendered by the server with every name escaped.
    if (report.diagram_svg !== undefined) $("diagram").innerHTML = report.diagram_svg;
  }

  async function validate() {
    const mine = ++seq;
    const { data } = await api("POST", "/api/flows/validate", { yaml: editor.value });
    if (mine === seq) showReport(data);
    return data;
  }

  function cell(row, text) {
    const td = document.createElement("td");
    td.textContent = text === null || text === undefined ? "" : String(text);
    row.append(td);
    return td;
  }

  async function refreshHistory() {
    const versions = await api("GET", "/api/flows/" + encodeURIComponent(flowName) + "/versions");
    const body = $("versions");
    body.replaceChildren();
    const list = versions.data.versions || [];
    list.forEach((v, i) => {
      const tr = document.createElement("tr");
      cell(tr, v.version + (i === 0 ? " (live)" : ""));
      cell(tr, v.published_at);
      cell(tr, v.published_by);
      cell(tr, v.rollback_of ? "rollback to " + v.rollback_of : v.comment);
      const td = cell(tr, "");
      if (i > 0) {
        const b = document.createElement("button");
        b.type = "button";
        b.textContent = "Roll back to " + v.version;
        b.className = "rollback-btn";
        b.dataset.version = v.version;
        b.addEventListener("click", () => rollback(v.version));
        td.append(b);
      }
      body.append(tr);
    });
    if (list.length) $("live-version").textContent = list[0].version;
    const audit = await api("GET", "/api/flows/audit");
    const ab = $("audit");
    ab.replaceChildren();
    for (const a of audit.data.audit || []) {
      const tr = document.createElement("tr");
      [a.at, a.actor, a.action + " " + a.flow_name, a.from_version, a.to_version].forEach((t) => cell(tr, t));
      ab.append(tr);
    }
  }

  async function publish() {
    const out = $("publish-result");
    out.textContent = "Publishing…";
    const { status, data } = await api("POST", "/api/flows/publish",
      { yaml: editor.value, comment: $("publish-comment").value });
    if (status === 201) {
      out.textContent = "Published version " + data.version + " of " + data.flow_name + ": live from the next call.";
      await refreshHistory();
    } else {
      out.textContent = "Not published: " + (data.error || status);
      if (data.errors) showReport(data);
    }
  }

  async function rollback(version) {
    const out = $("publish-result");
    const { status, data } = await api("POST", "/api/flows/" + encodeURIComponent(flowName) + "/rollback",
      { version });
    if (status === 201) {
      out.textContent = "Rolled back: version " + version + " is live again as version " + data.version + ".";
      const live = await api("GET", "/api/flows/" + encodeURIComponent(flowName));
      if (live.data.text) editor.value = live.data.text;
      await validate();
      await refreshHistory();
    } else {
      out.textContent = "Not rolled back: " + (data.error || status);
    }
  }

  editor.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(validate, 400);
  });
  $("validate-btn").addEventListener("click", validate);
  $("publish-btn").addEventListener("click", publish);
  validate();
  refreshHistory();
})();
