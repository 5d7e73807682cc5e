// 12345 hotline /agents: queue state of agents, refreshed every 2 s; Log in / Pause / Resume / Log out. No framework.
"use strict";

(function () {
  const REFRESH_MS = 2000;
  const display = HotlineDisplay.fromPage();  // the server's display rules (display.js)
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const ownAgent = document.body.dataset.ownAgent || "";
  const supervisor = document.body.dataset.supervisor === "1";
  const status = document.getElementById("agents-status");
  const errorLine = document.getElementById("agents-error");
  const busy = new Set();  // agents with a command in flight: their buttons stay disabled
  let loadErrorShown = !!errorLine && !errorLine.hidden;  // the page could not list the agents when it was made

  function fill(root, agent) {
    const texts = display.agentFields(agent);
    for (const el of root.querySelectorAll("[data-agent-field]")) {
      const text = texts[el.dataset.agentField];
      if (text !== undefined && el.textContent !== text) el.textContent = text;
      if (el.dataset.agentField === "state") {
        el.className = el.className.replace(/\bagent-state-\S+/g, "").trim() + " agent-state-" + display.agentState(agent);
      }
    }
    const allowed = busy.has(agent.name) ? new Set() : display.allowedActions(agent);
    const base = "/api/agents/" + encodeURIComponent(agent.name) + "/";
    for (const button of root.querySelectorAll("button[data-action]")) {
      button.disabled = !allowed.has(button.dataset.action);
      button.setAttribute("formaction", base + button.dataset.action);
    }
    for (const select of root.querySelectorAll("select[name=reason]")) select.disabled = !allowed.has("pause");
  }

  function setStatus(text, stale) {
    if (!status) return;
    status.textContent = text;
    status.classList.toggle("stale", !!stale);
  }

  function showError(text) {
    if (!errorLine) return;
    errorLine.textContent = text;
    errorLine.hidden = !text;
  }

  async function answer(response, url) {
    if (response.status === 401) {
      window.location.assign("/login?next=" + encodeURIComponent(location.pathname));
      throw new Error("signed out");
    }
    let data = {};
    try { data = await response.json(); } catch (e) { data = {}; }
    if (!response.ok) throw new Error((data && data.error) || url + ": HTTP " + response.status);
    return data;
  }

  async function getJSON(url) {
    const response = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
    return answer(response, url);
  }

  async function postJSON(url, payload) {
    const response = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(payload),
    });
    return answer(response, url);
  }

  // --- rendering ------------------------------------------------------------------------------

  const latest = new Map();  // name -> the agent as last listed

  function renderOwn() {
    const panel = document.querySelector('#my-queue-state .agent[data-agent]');
    const agent = latest.get(ownAgent);
    if (panel && agent) fill(panel, agent);
  }

  function renderTable(agents) {
    const tbody = document.getElementById("agent-rows");
    if (!tbody) return;
    const count = document.getElementById("agent-count");
    if (count) count.textContent = String(agents.length);
    if (agents.length === 0) {
      tbody.replaceChildren(document.getElementById("agent-empty-template").content.firstElementChild.cloneNode(true));
      return;
    }
    // Keep rows that still exist (a reason being chosen is not reset), add new ones, drop removed ones.
    const existing = new Map();
    for (const row of tbody.querySelectorAll("tr.agent[data-agent]")) existing.set(row.dataset.agent, row);
    const rows = agents.map((agent) => {
      let row = existing.get(agent.name);
      if (!row) {
        row = document.getElementById("agent-row-template").content.firstElementChild.cloneNode(true);
        row.dataset.agent = agent.name;
      }
      fill(row, agent);
      return row;
    });
    const same = rows.length === tbody.children.length && rows.every((row, i) => tbody.children[i] === row);
    if (!same) tbody.replaceChildren(...rows);
  }

  function render(agents) {
    latest.clear();
    for (const agent of agents) latest.set(agent.name, agent);
    if (ownAgent) renderOwn();
    if (supervisor) renderTable(agents);
  }

  function renderOne(name) {
    const agent = latest.get(name);
    if (!agent) return;
    for (const el of document.querySelectorAll(".agent[data-agent]")) {
      if (el.dataset.agent === name) fill(el, agent);
    }
  }

  async function refresh() {
    try {
      const data = await getJSON("/api/agents");
      render(data.agents);
      if (loadErrorShown) {
        showError("");
        loadErrorShown = false;
      }
      setStatus("Live · updated " + display.fmt(new Date().toISOString(), "time"));
    } catch (err) {
      setStatus("Live updates paused: " + err.message, true);
    }
  }

  // --- commands -------------------------------------------------------------------------------

  document.addEventListener("submit", async (event) => {
    const form = event.target;
    if (!form.classList.contains("agent-actions")) return;
    event.preventDefault();
    const button = event.submitter;
    const holder = form.closest(".agent[data-agent]");
    if (!button || !button.dataset.action || !holder) return;
    const name = holder.dataset.agent;
    if (!supervisor && name !== ownAgent) return;  // the API refuses it too; never send it
    const action = button.dataset.action;
    const payload = action === "pause" ? { reason: form.elements.reason.value } : {};
    loadErrorShown = false;
    busy.add(name);
    renderOne(name);
    try {
      const data = await postJSON("/api/agents/" + encodeURIComponent(name) + "/" + action, payload);
      showError("");
      // Show what was asked at once; the live state (what Asterisk did) follows with the refresh.
      latest.set(name, Object.assign({}, latest.get(name) || {}, data.agent));
    } catch (err) {
      showError(display.rules.agent_action_labels[action] + " " + name + ": " + err.message);
    } finally {
      busy.delete(name);
      renderOne(name);
    }
    refresh();
  });

  refresh();
  window.setInterval(refresh, REFRESH_MS);
})();
