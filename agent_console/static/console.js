// 12345 hotline console: refreshes the live part every 2 s and posts forms as JSON. No framework.
"use strict";

(function () {
  const LIVE_MS = 2000;
  const CASES_MS = 10000;
  const fmt = HotlineDisplay.fromPage().fmt;  // the server's display rules (display.js)
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const body = document.body;

  function lookup(data, dotted) {
    let value = data;
    for (const part of dotted.split(".")) {
      if (value === null || typeof value !== "object") return null;
      value = value[part];
    }
    return value === undefined ? null : value;
  }

  function fill(root, data) {
    for (const el of root.querySelectorAll("[data-field]")) {
      const kind = el.dataset.format || "text";
      const value = lookup(data, el.dataset.field);
      const text = fmt(value, kind);
      if (el.textContent !== text) el.textContent = text;
      if (kind === "state") {
        el.className = el.className.replace(/\bstate-\S+/g, "").trim() + " state-" + (value || "none");
      }
    }
  }

  function fromTemplate(id) {
    const tpl = document.getElementById(id);
    return tpl ? tpl.content.firstElementChild.cloneNode(true) : null;
  }

  function setCaseNumber(el, number) {
    el.dataset.caseNumber = number || "";
    for (const form of el.querySelectorAll("form.note-form")) {
      form.action = number ? "/api/cases/" + encodeURIComponent(number) + "/notes" : "";
      form.hidden = !number;
    }
  }

  const status = document.getElementById("live-status");
  function setStatus(text, stale) {
    if (!status) return;
    status.textContent = text;
    status.classList.toggle("stale", !!stale);
  }

  async function getJSON(url) {
    const response = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
    if (response.status === 401) {
      window.location.assign("/login?next=" + encodeURIComponent(location.pathname));
      throw new Error("signed out");
    }
    if (!response.ok) throw new Error(url + ": HTTP " + response.status);
    return response.json();
  }

  // --- live calls + screen pop ---------------------------------------------------------------

  function renderLive(calls) {
    const tbody = document.getElementById("live-calls");
    if (!tbody) return;
    const count = document.getElementById("live-count");
    if (count) count.textContent = String(calls.length);
    if (calls.length === 0) {
      tbody.replaceChildren(fromTemplate("live-empty-template"));
      return;
    }
    const rows = calls.map((call) => {
      const row = fromTemplate("live-row-template");
      row.dataset.linkedid = call.linkedid || "";
      fill(row, call);
      return row;
    });
    tbody.replaceChildren(...rows);
  }

  function renderPop(pop) {
    const holder = document.getElementById("screen-pop-body");
    if (!holder) return;
    if (!pop) {
      if (holder.querySelector(".pop") || !holder.textContent.trim()) {
        holder.replaceChildren(fromTemplate("screen-pop-empty-template"));
      }
      return;
    }
    const number = (pop.case && pop.case.case_number) || pop.call.case_number || "";
    let panel = holder.querySelector(".pop");
    // Rebuild only when the call or its case changes, so a note being typed is not wiped.
    if (!panel || panel.dataset.linkedid !== String(pop.call.linkedid) || panel.dataset.caseNumber !== number) {
      panel = fromTemplate("screen-pop-template");
      panel.dataset.linkedid = pop.call.linkedid || "";
      setCaseNumber(panel, number);
      if (!pop.case) for (const el of panel.querySelectorAll(".pop-notes")) el.remove();
      holder.replaceChildren(panel);
    }
    fill(panel, pop);
  }

  async function refreshLive() {
    try {
      const data = await getJSON("/api/calls/live");
      renderLive(data.calls);
      if (body.dataset.sipEndpoint) renderPop(data.screen_pop);
      setStatus("Live · updated " + fmt(new Date().toISOString(), "time"));
    } catch (err) {
      setStatus("Live updates paused: " + err.message, true);
    }
  }

  // --- recent cases ---------------------------------------------------------------------------

  function showCase(caseData, flash) {
    const selector = '[data-case-number="' + CSS.escape(caseData.case_number) + '"]';
    for (const row of document.querySelectorAll("#case-rows " + selector)) {
      fill(row, caseData);
      if (flash) {
        row.classList.remove("flash");
        void row.offsetWidth;  // restart the animation
        row.classList.add("flash");
      }
    }
    for (const panel of document.querySelectorAll("#screen-pop-body .pop" + selector)) {
      fill(panel, { case: caseData });
    }
  }

  async function refreshCases() {
    const tbody = document.getElementById("case-rows");
    if (!tbody) return;
    try {
      const data = await getJSON("/api/cases?limit=50");
      const empty = tbody.querySelector("tr.empty");
      // Newest first: insert unseen cases at the top in order, update the rest in place.
      let anchor = tbody.firstElementChild;
      for (const c of data.cases) {
        const selector = '[data-case-number="' + CSS.escape(c.case_number) + '"]';
        const existing = tbody.querySelector(selector);
        if (existing) {
          fill(existing, c);
          continue;
        }
        const row = fromTemplate("case-row-template");
        row.id = "case-" + c.case_number;
        setCaseNumber(row, c.case_number);
        fill(row, c);
        tbody.insertBefore(row, anchor);
        if (empty) empty.remove();
      }
    } catch (err) {
      setStatus("Case updates paused: " + err.message, true);
    }
  }

  // --- forms ----------------------------------------------------------------------------------

  async function postJSON(url, payload) {
    const response = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(payload),
    });
    let data = {};
    try { data = await response.json(); } catch (e) { data = {}; }
    if (!response.ok) throw new Error(data.error || "HTTP " + response.status);
    return data;
  }

  function formStatus(form, text, kind) {
    const el = form.querySelector(".form-status");
    if (!el) return;
    el.textContent = text;
    el.className = "form-status" + (kind ? " " + kind : "");
  }

  document.addEventListener("submit", async (event) => {
    const form = event.target;
    if (form.classList.contains("note-form")) {
      event.preventDefault();
      const input = form.elements.note;
      const note = input.value.trim();
      if (!note || !form.action) return;
      formStatus(form, "Saving…");
      try {
        const data = await postJSON(form.action, { note });
        input.value = "";
        showCase(data.case, true);
        formStatus(form, "Saved", "done");
      } catch (err) {
        formStatus(form, err.message, "error");
      }
    } else if (form.id === "account-form") {
      event.preventDefault();
      const payload = {};
      for (const name of ["username", "display_name", "role", "sip_endpoint", "password"]) {
        payload[name] = form.elements[name].value;
      }
      formStatus(form, "Creating…");
      try {
        const data = await postJSON(form.action, payload);
        formStatus(form, "Created " + data.account.username, "done");
        window.setTimeout(() => window.location.reload(), 600);
      } catch (err) {
        formStatus(form, err.message, "error");
      }
    }
  });

  if (body.dataset.live === "1") {
    refreshLive();
    window.setInterval(refreshLive, LIVE_MS);
  } else {
    setStatus("Cases refresh every " + CASES_MS / 1000 + " s");
  }
  window.setInterval(refreshCases, CASES_MS);
})();
