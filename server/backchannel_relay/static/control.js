// The control room: a view of GET /v1/control/state, redrawn whenever the live channel
// (GET /v1/control/events) announces a new version. Every change goes through the JSON API with
// the session's CSRF token, which lives in this script's memory only (a reload logs in again).
// Data is only ever put on the page as text (textContent, DOM nodes): never as markup.
"use strict";

(() => {
  let csrf = null;
  let state = null;
  let clockSeen = 0; // performance.now() when state.clock arrived: the clock ticks from there
  let events = null;
  let probing = null;
  let loading = false;
  let reloadAgain = false;
  let editing = null;

  const $ = (id) => document.getElementById(id);
  // /control?exercise=NAME picks one of several loaded exercises; every API call names it.
  const chosen = new URLSearchParams(window.location.search).get("exercise");

  function withExercise(path) {
    if (!chosen) return path;
    return `${path}${path.includes("?") ? "&" : "?"}exercise=${encodeURIComponent(chosen)}`;
  }

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function cell(row, text, className) {
    const td = el("td", text, className);
    row.appendChild(td);
    return td;
  }

  function button(text, className, onClick) {
    const b = el("button", text, className);
    b.type = "button";
    b.addEventListener("click", onClick);
    return b;
  }

  function pad(n, width = 2) {
    return String(n).padStart(width, "0");
  }

  // Scenario time as the scenario's own zone shows it: 1962-10-22 09:00:05 -04:00.
  function scenarioText(ms, offsetMinutes) {
    const d = new Date(ms + offsetMinutes * 60000);
    const sign = offsetMinutes < 0 ? "-" : "+";
    const off = Math.abs(offsetMinutes);
    return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ` +
      `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())} ` +
      `${sign}${pad(Math.floor(off / 60))}:${pad(off % 60)}`;
  }

  function wallText(ms) {
    if (ms === null || ms === undefined) return "";
    const d = new Date(ms);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  function bytesText(n) {
    if (typeof n !== "number") return String(n ?? "");
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
  }

  // One line for a control action: what was done, in scenario time where it has one.
  function describe(action) {
    const d = action.detail && typeof action.detail === "object" ? action.detail : {};
    const offset = state && state.clock ? state.clock.utc_offset_minutes : 0;
    const when = (ms) => (typeof ms === "number" ? scenarioText(ms, offset) : "");
    const inject = `inject ${d.number ?? "?"}`;
    switch (action.action) {
      case "clock": {
        let what = `clock ${d.change ?? ""}`;
        if (d.change === "set") what += ` to ${when(d.value)}`;
        if (d.change === "speed") what += ` to ${d.value}\u00d7`;
        return `${what} (scenario ${when(d.scenario_now)})`;
      }
      case "release":
        return `release ${inject}, delivered at ${when(d.at)}`;
      case "skip":
        return `skip ${inject} (scenario ${when(d.scenario_now)})`;
      case "edit": {
        const changed = ["title", "text", "at"].filter((key) => key in d);
        return `edit ${inject}: ${changed.join(", ")}`;
      }
      case "add":
        return `add ${inject} at ${when(d.at)}: ${d.title ?? ""}`;
      case "invite":
        return `invite for ${d.role ?? "?"}`;
      default:
        return `${action.action} ${JSON.stringify(d)}`;
    }
  }

  // The ISO 8601 text the API reads back: 1962-10-22T09:00:00-04:00.
  function isoText(ms, offsetMinutes) {
    const [date, time, zone] = scenarioText(ms, offsetMinutes).split(" ");
    return `${date}T${time}${zone}`;
  }

  // --- talking to the relay ---------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (method !== "GET" && csrf) headers["X-CSRF-Token"] = csrf;
    let response;
    try {
      response = await fetch(withExercise(path), {
        method, headers, credentials: "same-origin", cache: "no-store",
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (exc) {
      throw new ApiError(0, "offline", "the relay cannot be reached");
    }
    let data = null;
    try { data = await response.json(); } catch (exc) { data = null; }
    if (!response.ok) {
      const message = (data && data.message) || `the relay answered ${response.status}`;
      throw new ApiError(response.status, data && data.error, message);
    }
    return data;
  }

  function notify(text, good = false) {
    const notice = $("notice");
    notice.textContent = text;
    notice.className = good ? "good" : "";
    notice.hidden = !text;
  }

  function failed(exc) {
    if (exc instanceof ApiError && exc.status === 401) {
      showLogin("The session has ended (or the relay restarted): log in again.");
      return;
    }
    notify(exc.message || String(exc));
  }

  // A change: the request, then an immediate redraw (the live channel tells the others).
  async function change(method, path, body, done) {
    try {
      const answer = await api(method, path, body);
      notify("");
      if (done) done(answer);
      await refresh();
    } catch (exc) {
      failed(exc);
    }
  }

  // --- login and logout -------------------------------------------------------------------------

  function showLogin(message) {
    csrf = null;
    state = null;
    closeEvents();
    $("room").hidden = true;
    $("who").hidden = true;
    $("login").hidden = false;
    $("exercise-title").textContent = "";
    const error = $("login-error");
    error.textContent = message || "";
    error.hidden = !message;
    notify("");
  }

  async function login(event) {
    event.preventDefault();
    const token = $("login-token").value.trim();
    const name = $("login-name").value.trim();
    try {
      const session = await api("POST", "/v1/control/session", { token, name });
      csrf = session.csrf;
      $("login-token").value = "";
      $("controller-name").textContent = session.name;
      $("login").hidden = true;
      $("who").hidden = false;
      $("room").hidden = false;
      await refresh();
      openEvents();
    } catch (exc) {
      showLogin(exc.status === 401 ? "That admin token is not this relay's." : exc.message);
    }
  }

  async function logout() {
    try { await api("DELETE", "/v1/control/session"); } catch (exc) { /* ended anyway */ }
    showLogin("Logged out.");
  }

  // --- the live channel -------------------------------------------------------------------------

  function setLive(on) {
    const live = $("live");
    live.textContent = on ? "live" : "offline";
    live.className = on ? "live on" : "live off";
  }

  function openEvents() {
    closeEvents();
    events = new EventSource(withExercise("/v1/control/events"));
    events.addEventListener("open", () => setLive(true));
    events.addEventListener("version", (event) => {
      setLive(true);
      let version = null;
      try { version = JSON.parse(event.data).version; } catch (exc) { return; }
      if (!state || version !== state.version) refresh();
    });
    events.addEventListener("error", () => {
      setLive(false);
      // Refused (a 401 or 429) closes it for good: find out why, and reopen if still welcome.
      if (events && events.readyState === EventSource.CLOSED && !probing) {
        probing = setTimeout(async () => {
          probing = null;
          if (csrf === null) return;
          if (await refresh()) openEvents();
        }, 2000);
      }
    });
  }

  function closeEvents() {
    if (events) events.close();
    events = null;
    if (probing) clearTimeout(probing);
    probing = null;
    setLive(false);
  }

  // --- drawing ----------------------------------------------------------------------------------

  async function refresh() {
    if (loading) { reloadAgain = true; return true; }
    loading = true;
    try {
      do {
        reloadAgain = false;
        const next = await api("GET", "/v1/control/state");
        if (csrf === null) return false; // logged out meanwhile
        state = next;
        clockSeen = performance.now();
        draw();
      } while (reloadAgain);
      return true;
    } catch (exc) {
      failed(exc);
      return false;
    } finally {
      loading = false;
    }
  }

  function draw() {
    const title = state.title ? `${state.title} (${state.exercise})` : state.exercise;
    $("exercise-title").textContent = title || "";
    document.body.dataset.version = String(state.version);
    drawClock();
    drawRoles();
    drawInjects();
    drawTraffic();
    drawDeadlines();
    drawHealth();
    drawActions();
  }

  function scenarioNow() {
    const c = state.clock;
    const elapsed = c.paused ? 0 : (performance.now() - clockSeen) * c.speed;
    return c.scenario_now + Math.floor(elapsed);
  }

  function tick() {
    if (!state || !state.clock) return;
    $("scenario-time").textContent = scenarioText(scenarioNow(), state.clock.utc_offset_minutes);
    $("wall-time").textContent = wallText(Date.now());
  }

  function drawClock() {
    const c = state.clock;
    $("clock-state").textContent = c.paused ? "paused" : "running";
    $("clock-state").className = c.paused ? "no" : "yes";
    $("clock-speed").textContent = `${c.speed}\u00d7 wall time`;
    $("clock-pause").disabled = c.paused;
    $("clock-resume").disabled = !c.paused;
    const speed = $("clock-speed-value");
    if (document.activeElement !== speed) speed.value = String(c.speed);
    tick();
  }

  function drawRoles() {
    const body = $("roles").tBodies[0];
    body.replaceChildren();
    for (const role of state.roles) {
      const row = el("tr");
      row.dataset.role = role.name;
      cell(row, role.name);
      cell(row, role.kind);
      cell(row, role.title, "text");
      if (role.registered) {
        cell(row, `yes, ${wallText(role.registered_at)}`, "yes registered");
        cell(row, "");
      } else {
        cell(row, "not yet", "no registered");
        const invite = cell(row, role.invite_open ? "unused invite out " : "no open invite ");
        invite.appendChild(button("New invite", "invite", () => newInvite(role.name)));
      }
      body.appendChild(row);
    }
  }

  function newInvite(role) {
    change("POST", "/v1/control/invites", { role }, (answer) => {
      $("invite-role").textContent = answer.role;
      $("invite-code").textContent = answer.invite;
      $("invite-expires").textContent = wallText(answer.expires_at * 1000);
      $("invite-shown").hidden = false;
    });
  }

  function injectStatus(inject) {
    if (inject.status === "released") {
      const by = inject.by ? ` by ${inject.by}` : "";
      return `released${by} ${wallText(inject.released_at)}`.trim();
    }
    if (inject.status === "skipped") return `skipped${inject.by ? ` by ${inject.by}` : ""}`;
    return "scheduled";
  }

  function drawInjects() {
    const body = $("injects").tBodies[0];
    body.replaceChildren();
    for (const inject of state.injects) {
      const row = el("tr");
      row.dataset.inject = String(inject.number);
      row.dataset.status = inject.status;
      cell(row, inject.number);
      cell(row, inject.scenario_time);
      cell(row, (inject.to || []).join(", "));
      cell(row, inject.title, "text title");
      cell(row, inject.text, "text body");
      const status = cell(row, injectStatus(inject), `status status-${inject.status}`);
      if (inject.edited_by) status.appendChild(el("div", `edited by ${inject.edited_by}`, "muted"));
      const actions = cell(row, "");
      if (inject.status === "scheduled") {
        const path = `/v1/control/injects/${encodeURIComponent(inject.number)}`;
        actions.appendChild(button("Release now", "release",
          () => change("POST", `${path}/release`, {})));
        actions.appendChild(button("Skip", "skip danger",
          () => change("POST", `${path}/skip`, {})));
        actions.appendChild(button("Edit", "edit", () => startEdit(inject)));
      }
      body.appendChild(row);
    }
  }

  function startEdit(inject) {
    editing = { ...inject };
    $("edit-number").textContent = String(inject.number);
    $("edit-title").value = inject.title || "";
    $("edit-text").value = inject.text || "";
    editing.iso = isoText(inject.at, state.clock.utc_offset_minutes);
    $("edit-at").value = editing.iso;
    $("inject-edit-form").hidden = false;
    $("edit-text").focus();
  }

  function saveEdit(event) {
    event.preventDefault();
    if (!editing) return;
    const body = {};
    if ($("edit-title").value !== (editing.title || "")) body.title = $("edit-title").value;
    if ($("edit-text").value !== (editing.text || "")) body.text = $("edit-text").value;
    if ($("edit-at").value.trim() !== editing.iso) body.at = $("edit-at").value.trim();
    const path = `/v1/control/injects/${encodeURIComponent(editing.number)}`;
    change("PATCH", path, body, () => {
      editing = null;
      $("inject-edit-form").hidden = true;
    });
  }

  function addInject(event) {
    event.preventDefault();
    const to = $("add-to").value.split(",").map((s) => s.trim()).filter((s) => s);
    const body = {
      at: $("add-at").value.trim(), to, title: $("add-title").value, text: $("add-text").value,
    };
    change("POST", "/v1/control/injects", body, () => {
      $("add-title").value = "";
      $("add-text").value = "";
    });
  }

  function drawTraffic() {
    const traffic = state.traffic || {};
    const sees = (traffic.control_sees && traffic.control_sees.classes) || {};
    const counts = traffic.counts || {};
    const letters = traffic.letters || [];
    const classes = $("classes").tBodies[0];
    classes.replaceChildren();
    for (const name of Object.keys(sees).sort()) {
      const row = el("tr");
      row.dataset.class = name;
      cell(row, name);
      cell(row, sees[name]);
      // existence: the relay's count; envelope and content: the letters listed (the newest
      // ones); nothing: control is told nothing, not even a count.
      let count = "\u2014";
      if (sees[name] === "existence") count = counts[name] ?? 0;
      else if (sees[name] === "envelope" || sees[name] === "content") {
        count = letters.filter((l) => l.class === name).length;
      }
      cell(row, count);
      classes.appendChild(row);
    }
    const pairs = $("pairs");
    pairs.replaceChildren();
    for (const pair of (traffic.control_sees && traffic.control_sees.pairs) || []) {
      const rules = Object.entries(pair).filter(([key]) => key !== "between")
        .map(([key, value]) => `${key}: ${value}`).join(", ");
      pairs.appendChild(el("li", `between ${(pair.between || []).join(" and ")}: ${rules}`));
    }
    const body = $("letters").tBodies[0];
    body.replaceChildren();
    for (const letter of letters.slice().reverse()) {
      const row = el("tr");
      cell(row, wallText(letter.at));
      cell(row, letter.class);
      cell(row, letter.from);
      cell(row, letter.to);
      if (typeof letter.text === "string") cell(row, letter.text, "text");
      else cell(row, letter.verified ? String(letter.verified) : "", "muted");
      body.appendChild(row);
    }
  }

  function drawDeadlines() {
    const body = $("deadlines").tBodies[0];
    body.replaceChildren();
    for (const d of state.deadlines || []) {
      const row = el("tr");
      cell(row, d.scenario_time);
      cell(row, d.via ? `${d.kind} via ${d.via}` : d.kind);
      cell(row, d.from);
      cell(row, Array.isArray(d.to) ? d.to.join(", ") : d.to);
      cell(row, d.title ?? "", "text");
      body.appendChild(row);
    }
    if (!body.firstChild) {
      const row = el("tr");
      cell(row, "nothing pending", "muted").colSpan = 5;
      body.appendChild(row);
    }
  }

  function drawHealth() {
    const h = state.health || {};
    const list = $("health");
    list.replaceChildren();
    const items = [
      ["Connections", h.connections],
      ["Queued envelopes", h.queued_envelopes],
      ["Disk free", bytesText(h.disk_free_bytes)],
      ["Store", h.store],
    ];
    for (const [label, value] of items) {
      list.appendChild(el("dt", label));
      list.appendChild(el("dd", value ?? ""));
    }
  }

  function drawActions() {
    const list = $("actions");
    list.replaceChildren();
    for (const a of state.actions || []) {
      const item = el("li");
      item.dataset.action = a.action;
      item.appendChild(el("span", `${wallText(a.at)} `, "muted"));
      item.appendChild(el("strong", a.by));
      item.appendChild(el("span", ` ${describe(a)}`));
      list.appendChild(item);
    }
  }

  // --- wiring -----------------------------------------------------------------------------------

  function clockChange(body) {
    change("POST", "/v1/control/clock", body);
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("login-form").addEventListener("submit", login);
    $("logout").addEventListener("click", logout);
    $("clock-pause").addEventListener("click", () => clockChange({ action: "pause" }));
    $("clock-resume").addEventListener("click", () => clockChange({ action: "resume" }));
    $("clock-set-form").addEventListener("submit", (event) => {
      event.preventDefault();
      clockChange({ action: "set", time: $("clock-set-time").value.trim() });
    });
    $("clock-speed-form").addEventListener("submit", (event) => {
      event.preventDefault();
      clockChange({ action: "speed", speed: Number($("clock-speed-value").value) });
    });
    $("invite-hide").addEventListener("click", () => {
      $("invite-code").textContent = "";
      $("invite-shown").hidden = true;
    });
    $("inject-edit-form").addEventListener("submit", saveEdit);
    $("edit-cancel").addEventListener("click", () => {
      editing = null;
      $("inject-edit-form").hidden = true;
    });
    $("inject-add-form").addEventListener("submit", addInject);
    setInterval(tick, 250);
    // Health and traffic change without a new version (the version counts control's actions
    // and registrations): a slow redraw keeps them fresh.
    setInterval(() => { if (csrf !== null && !loading) refresh(); }, 15000);
    showLogin("");
  });
})();
