// How the console shows values. The rules (labels, formats, agent states and controls) come from the server
// (agent_console/display.py), embedded in the page as <script type="application/json" id="display-rules">;
// this file only applies them, the way display.py does, so a live update shows what a page load shows.
"use strict";

(function (root) {
  function two(n) {
    return String(n).padStart(2, "0");
  }

  // The strftime subset display.py's formats use: %Y %m %d %H %M %S (local time).
  function strftime(d, pattern) {
    const parts = {
      Y: String(d.getFullYear()), m: two(d.getMonth() + 1), d: two(d.getDate()),
      H: two(d.getHours()), M: two(d.getMinutes()), S: two(d.getSeconds()), "%": "%",
    };
    return pattern.replace(/%([YmdHMS%])/g, (_, code) => parts[code]);
  }

  function create(rules) {
    function fmt(value, kind) {
      if (value === null || value === undefined || value === "" || (Array.isArray(value) && value.length === 0)) {
        return kind === "notes" ? "" : rules.empty;
      }
      if (Array.isArray(value)) return value.join(rules.list_separator);
      const text = String(value);
      if (kind === "datetime" || kind === "time") {
        const d = new RegExp(rules.datetime_pattern).test(text) ? new Date(text) : null;
        if (d === null || Number.isNaN(d.getTime())) return text;
        return strftime(d, kind === "datetime" ? rules.datetime_format : rules.time_format);
      }
      if (kind === "state") return rules.live_state_labels[text] || text;
      if (kind === "seconds") {
        const total = Math.trunc(Number(value));
        if (Number.isNaN(total)) return text;
        return Math.floor(total / 60) + ":" + two(total % 60);
      }
      return text;
    }

    function reasonLabel(reason) {
      return String(reason).replace(/_/g, " ");
    }

    function agentState(agent) {
      return agent.state || "logged_out";
    }

    function applies(rule, agent) {
      const state = agentState(agent);
      return Object.entries(rule.when).every(([key, wanted]) => {
        if (key === "state") return state === wanted;
        if (key === "state_not") return state !== wanted;
        return !!agent[key] === wanted;
      });
    }

    function allowedActions(agent) {
      const actions = new Set();
      if (!agent.name) return actions;
      for (const rule of rules.action_rules) {
        if (applies(rule, agent)) for (const action of rule.actions) actions.add(action);
      }
      return actions;
    }

    function clock(epoch) {
      if (epoch === null || epoch === undefined || epoch === "") return rules.empty;
      const d = new Date(Number(epoch) * 1000);
      return Number.isNaN(d.getTime()) ? rules.empty : strftime(d, rules.time_format);
    }

    function agentFields(agent) {
      const state = agentState(agent);
      const reason = agent.live_pause_reason || agent.pause_reason;
      const paused = state === "paused" || !!agent.paused;
      let label = rules.agent_state_labels[state] || state.replace(/_/g, " ");
      if (state === "paused" && reason) {
        label = rules.paused_state_label.replace("{state}", label).replace("{reason}", reasonLabel(reason));
      }
      const pending = rules.pending_rules.find((rule) => applies(rule, agent));
      const queues = Object.keys(agent.skills || {}).sort();
      return {
        name: agent.name || "",
        display_name: agent.display_name || "",
        state: label,
        pending: pending ? pending.text : "",
        pause_reason: paused && reason ? reasonLabel(reason) : rules.empty,
        queues: queues.length ? queues.join(rules.queue_separator) : rules.empty,
        since: clock(agent.state_since),
      };
    }

    return { rules, fmt, reasonLabel, agentState, allowedActions, agentFields };
  }

  function fromPage() {
    return create(JSON.parse(document.getElementById("display-rules").textContent));
  }

  root.HotlineDisplay = { create, fromPage };
})(globalThis);
