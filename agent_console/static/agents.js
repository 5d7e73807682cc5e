// 12345 hotline /agents: queue state of agents, refreshed every 2 s; Log in / Pause / Resume / Log out. No framework.
"use strict";

(function () {
  const REFRESH_MS = 2000;
  const STATE_LABELS = {
    logged_out: "logged out", available: "available", ringing: "ringing", on_call: "on call",
    wrap_up: "wrap-up", paused: "paused", unreachable: "unreachable",
  };
  const ACTION_LABELS = { login: "Log in", pause: "Pause", resume: "Resume", logout: "Log out" };
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const ownAgent = document.body.dataset.ownAgent || "";
  const supervisor = document.body.dataset.supervisor === "1";
  const status = document.getElementById("agents-status");
  const errorLine = document.getElementById("agents-error");
  const busy = new Set();  // agents with a command in flight: their buttons stay disabled
  let loadErrorShown = !!errorLine && !errorLine.hidden;  // the page could not list the agents when it was made

  function reasonLabel(reason) {
    return String(reason).replace(/_/g, " ");
  }

  function two(n) {
    return String(n).padStart(2, "0");
  }

  // Same rules as pages.agent_fields() on the server.
  function agentFields(agent) {
    const state = agent.state || "logged_out";
    const reason = agent.live_pause_reason || agent.pause_reason;
    const paused = state === "paused" || !!agent.paused;
    let label = STATE_LABELS[state] || state.replace(/_/g, " ");
    if (state === "paused" && reason) label += " (" + reasonLabel(reason) + ")";
    let pending = "";
    if (agent.logged_in && state === "logged_out") pending = "log-in not applied in Asterisk yet";
    else if (!agent.logged_in && state !== "logged_out") pending = "log-out not applied in Asterisk yet";
    else if (agent.paused && state === "available") pending = "pause not applied in Asterisk yet";
    else if (agent.logged_in && !agent.paused && state === "paused") pending = "resume not applied in Asterisk yet";
    let since = "—";
    if (agent.state_since !== null && agent.state_since !== undefined && agent.state_since !== "") {
      const d = new Date(Number(agent.state_since) * 1000);
      if (!Number.isNaN(d.getTime())) since = two(d.getHours()) + ":" + two(d.getMinutes()) + ":" + two(d.getSeconds());
    }
    const queues = Object.keys(agent.skills || {}).sort();
    return {
      name: agent.name || "",
      display_name: agent.display_name || "",
      state: label,
      pending: pending,
      pause_reason: paused && reason ? reasonLabel(reason) : "—",
      queues: queues.length ? queues.join(", ") : "—",
      since: since,
    };
  }

  // Same rules as pages.agent_actions() on the server.
  function allowedActions(agent) {
    const state = agent.state || "logged_out";
    if (!agent.logged_in) return new Set(state !== "logged_out" ? ["login", "logout"] : ["login"]);
    const actions = new Set(["logout", agent.paused ? "resume" : "pause"]);
    if (state === "logged_out") actions.add("login");
    return actions;
  }

  function fill(root, agent) {
    const texts = agentFields(agent);
    for (const el of root.querySelectorAll("[data-agent-field]")) {
      const text = texts[el.dataset.agentField];
      if (text !== undefined && el.textContent !== text) el.textContent = text;
      if (el.dataset.agentField === "state") {
        el.className = el.className.replace(/\bagent-state-\S+/g, "").trim() + " agent-state-" + (agent.state || "logged_out");
      }
    }
    const allowed = busy.has(agent.name) ? new Set() : allowedActions(agent);
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
      tbody.innerHTML = '<tr class="empty"><td colspan="6">No agents.</td></tr>';
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
      setStatus("Live · updated " + agentFields({ state_since: Date.now() / 1000 }).since);
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
      showError(ACTION_LABELS[action] + " " + name + ": " + err.message);
    } finally {
      busy.delete(name);
      renderOne(name);
    }
    refresh();
  });

  refresh();
  window.setInterval(refresh, REFRESH_MS);
})();
