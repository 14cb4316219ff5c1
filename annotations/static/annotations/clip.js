// The clip page: player, transcript, label editor, autosave, submit, keys. No inline script (CSP): the
// page's data comes from the JSON block #clip-data. The server decides everything; this only keeps the
// draft saved and the keyboard fast.
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("clip-data").textContent);
  const $ = (id) => document.getElementById(id);
  const video = $("video");
  const EVIDENCE = ["face", "voice", "words"];
  const SAVE_DELAY_MS = 1200;
  // A save that failed on the way (offline, a 5xx) is tried again after 1 s, 2 s, 4 s … up to 30 s.
  const RETRY_FIRST_MS = 1000, RETRY_MAX_MS = 30000;
  const { controlOwnsKey, autocomplete } = window.Affectloop;  // labels.js, loaded before this file

  const state = {
    labels: (data.annotation.labels || []).map(normaliseLabel),
    version: data.annotation.version,
    selected: -1,
    dirty: false,
    saving: false,
    submitting: false,
    edits: 0,        // counts changes, so a refused save knows whether anything new came since
    retryMs: 0,      // the current backoff after failed saves; 0 when the last save went through
    focusMs: 0,
    focusSince: document.hasFocus() ? performance.now() : null,
    families: data.families || {},
  };
  let saveTimer = null;

  function normaliseLabel(lab) {
    if (typeof lab === "string") lab = { term: lab };
    return { term: lab.term, source: lab.source || "human", note: lab.note || "", evidence: lab.evidence || [] };
  }

  function csrf() {
    const m = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return m ? decodeURIComponent(m[1]) : "";
  }

  async function post(url, body) {
    const response = await fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf() },
      body: JSON.stringify(body),
    });
    let payload = {};
    try { payload = await response.json(); } catch (e) { payload = {}; }
    return { status: response.status, payload };
  }

  // --- lead time: only the seconds the page had focus --------------------------------------------------
  function takeLeadTime() {
    if (state.focusSince !== null) {
      state.focusMs += performance.now() - state.focusSince;
      state.focusSince = document.hasFocus() ? performance.now() : null;
    }
    const seconds = state.focusMs / 1000;
    state.focusMs = 0;
    return seconds;
  }
  window.addEventListener("focus", () => { if (state.focusSince === null) state.focusSince = performance.now(); });
  window.addEventListener("blur", () => {
    if (state.focusSince !== null) { state.focusMs += performance.now() - state.focusSince; state.focusSince = null; }
  });

  // --- save status -------------------------------------------------------------------------------------
  function setStatus(text, kind) {
    const el = $("save-status");
    if (!el) return;
    el.textContent = text;
    el.dataset.state = kind || "";
  }

  function scheduleSave(ms) {
    clearTimeout(saveTimer);
    saveTimer = setTimeout(save, ms);
  }

  function changed() {
    state.dirty = true;
    state.edits += 1;
    setStatus("Unsaved changes", "dirty");
    render();
    scheduleSave(SAVE_DELAY_MS);
  }

  // Only a failure on the way (offline, a 5xx) is worth sending again, later and later. Any other answer
  // the server gave on purpose: a 409 opens the conflict dialog or ends the lease, and another 4xx (a 400
  // with its message in `error`) refused this input, so the same request would be refused again: the page
  // shows why and waits for the next change.
  async function save() {
    if (!data.editable || !state.dirty || state.saving || state.submitting) return;
    state.saving = true;
    state.dirty = false;
    const editsSent = state.edits;
    let retry = null, refused = false;
    setStatus("Saving…", "saving");
    try {
      const { status, payload } = await post(data.urls.save, {
        labels: state.labels, version: state.version, lead_time: takeLeadTime(),
      });
      if (status === 200) {
        state.retryMs = 0;
        state.version = payload.annotation.version;
        if (!state.dirty) setStatus("Saved", "saved");
      } else if (status === 409 && payload.code === "lease") {
        leaseLost(payload.error);
      } else if (status === 409) {
        state.dirty = true;
        showConflict(payload);
      } else if (status >= 500) {
        state.dirty = true;
        retry = `Not saved (server error ${status}).`;
      } else {
        state.dirty = true;
        state.retryMs = 0;
        refused = state.edits === editsSent;  // newer edits still get their own try
        setStatus(payload.error ? `Not saved: ${payload.error}` : `Not saved (error ${status})`, "error");
      }
    } catch (e) {
      state.dirty = true;
      retry = "Not saved: offline?";
    } finally {
      state.saving = false;
      if (retry) retryLater(retry);
      else if (state.dirty && !refused && data.editable && !$("conflict-dialog").open) scheduleSave(SAVE_DELAY_MS);
    }
  }

  function retryLater(reason) {
    state.retryMs = state.retryMs ? Math.min(RETRY_MAX_MS, state.retryMs * 2) : RETRY_FIRST_MS;
    const wait = Math.round(state.retryMs * (0.9 + Math.random() * 0.2));  // a little jitter: not all tabs at once
    setStatus(`${reason} Retrying in ${Math.ceil(wait / 1000)} s…`, "error");
    scheduleSave(wait);
  }

  function leaseLost(message) {
    // Someone else has this clip's place now: stop writing (the server kept the draft as it was).
    data.editable = false;
    state.dirty = false;
    clearTimeout(saveTimer);
    setStatus(message || "You no longer hold this clip; your last saved draft is kept.", "error");
    for (const el of document.querySelectorAll("#label-input, #submit, #accept-all, .remove, .evidence-toggle")) el.disabled = true;
  }

  window.addEventListener("beforeunload", (event) => {
    if (data.editable && (state.dirty || state.saving) && !state.submitting) {
      event.preventDefault();
      event.returnValue = "";
    }
  });

  // --- conflicts ---------------------------------------------------------------------------------------
  let conflictStored = null;
  function fillList(list, labels) {
    list.replaceChildren(...labels.map((lab) => { const li = document.createElement("li"); li.textContent = lab.term; return li; }));
  }
  function showConflict(payload) {
    conflictStored = payload.stored;
    setStatus("Conflict: changed elsewhere", "error");
    $("conflict-version").textContent = String(payload.stored.version);
    fillList($("conflict-stored"), payload.stored.labels || []);
    fillList($("conflict-mine"), state.labels);
    const dialog = $("conflict-dialog");
    if (!dialog.open) dialog.showModal();
  }
  $("conflict-take-stored").addEventListener("click", () => {
    state.labels = (conflictStored.labels || []).map(normaliseLabel);
    state.version = conflictStored.version;
    state.dirty = false;
    $("conflict-dialog").close();
    if (conflictStored.status !== "draft") { window.location.reload(); return; }
    setStatus("Saved", "saved");
    render();
  });
  $("conflict-keep-mine").addEventListener("click", () => {
    if (conflictStored.status !== "draft") { window.location.reload(); return; }
    state.version = conflictStored.version;  // rebased on the stored version, on purpose, by a human
    $("conflict-dialog").close();
    changed();
  });

  // --- labels ------------------------------------------------------------------------------------------
  const list = $("labels");
  function render() {
    list.replaceChildren(...state.labels.map((lab, i) => {
      const li = document.createElement("li");
      li.className = "label-item" + (i === state.selected ? " selected" : "");
      li.dataset.index = String(i);
      const chip = document.createElement("span");
      const family = state.families[lab.term] || "";
      chip.className = "chip" + (family ? " family-" + family : "");
      chip.textContent = lab.term;
      if (family && family !== lab.term) {
        const fam = document.createElement("span");
        fam.className = "family";
        fam.textContent = family;
        chip.append(" ", fam);
      }
      li.append(`${i + 1}. `, chip);
      const ev = document.createElement("span");
      ev.className = "evidence";
      for (const e of EVIDENCE) {
        const b = document.createElement("button");
        b.type = "button";
        b.className = "evidence-toggle" + (lab.evidence.includes(e) ? " on" : "");
        b.textContent = e;
        b.disabled = !data.editable;
        b.setAttribute("aria-pressed", String(lab.evidence.includes(e)));
        b.addEventListener("click", () => toggleEvidence(i, e));
        ev.append(b);
      }
      li.append(ev);
      if (lab.note) {
        const note = document.createElement("span");
        note.className = "note";
        note.textContent = lab.note;
        li.append(note);
      }
      if (data.editable) {
        const remove = document.createElement("button");
        remove.type = "button";
        remove.className = "remove";
        remove.title = "Remove (Delete)";
        remove.textContent = "×";
        remove.addEventListener("click", () => removeLabel(i));
        li.append(remove);
      }
      li.addEventListener("click", (event) => { if (event.target === li || event.target === chip) select(i); });
      return li;
    }));
    for (const chip of document.querySelectorAll("#model-chips .chip")) {
      chip.classList.toggle("taken", state.labels.some((l) => l.term.toLowerCase() === chip.dataset.term.toLowerCase()));
    }
  }
  function select(i) { state.selected = i; render(); }
  function addLabel(term, source, family) {
    term = (term || "").trim().replace(/\s+/g, " ");
    if (!term || !data.editable) return;
    if (family) state.families[term] = family;
    if (state.labels.some((l) => l.term.toLowerCase() === term.toLowerCase())) return;
    state.labels.push({ term, source: source || "human", note: "", evidence: [] });
    state.selected = state.labels.length - 1;
    changed();
  }
  function removeLabel(i) {
    if (!data.editable || i < 0 || i >= state.labels.length) return;
    state.labels.splice(i, 1);
    state.selected = Math.min(i, state.labels.length - 1);
    changed();
  }
  function moveLabel(i, delta) {
    const j = i + delta;
    if (!data.editable || i < 0 || j < 0 || j >= state.labels.length) return;
    [state.labels[i], state.labels[j]] = [state.labels[j], state.labels[i]];
    state.selected = j;
    changed();
  }
  function toggleEvidence(i, e) {
    if (!data.editable || i < 0) return;
    const ev = state.labels[i].evidence;
    state.labels[i].evidence = ev.includes(e) ? ev.filter((x) => x !== e) : EVIDENCE.filter((x) => x === e || ev.includes(x));
    changed();
  }
  function editNote(i) {
    if (!data.editable || i < 0) return;
    const note = window.prompt(`Note on "${state.labels[i].term}"`, state.labels[i].note);
    if (note === null) return;
    state.labels[i].note = note.trim().slice(0, 1000);
    changed();
  }
  function acceptAll() {
    for (const chip of data.chips || []) addLabel(chip.term, "fused", chip.family);
  }
  for (const chip of document.querySelectorAll("#model-chips .chip")) {
    chip.addEventListener("click", () => {
      const info = (data.chips || []).find((c) => c.term === chip.dataset.term);
      addLabel(chip.dataset.term, "fused", info && info.family);
    });
  }
  if ($("accept-all")) $("accept-all").addEventListener("click", acceptAll);

  // --- autocomplete (labels.js) -----------------------------------------------------------------------
  const input = $("label-input");
  async function addNewWord(word, box) {
    if (!window.confirm(`"${word}" is not in the project's vocabulary. Add it as a new word (a manager will place it)?`)) return;
    const { status, payload } = await post(data.urls.propose, { word });
    if (status !== 200) { setStatus(payload.error || "Could not add the word", "error"); return; }
    addLabel(payload.word, "human", payload.family);
    box.clear();
  }
  if (input) {
    const box = autocomplete(input, $("suggestions"), {
      url: data.urls.vocabulary,
      // The annotation stores the word that was chosen; the vocabulary resolves its canonical term.
      onPick: (r) => addLabel(r.word, "human", r.family),
      onUnknown: (word) => addNewWord(word, box),
    });
  }

  // --- submit ------------------------------------------------------------------------------------------
  function idempotencyKey() {
    // randomUUID exists only in secure contexts (HTTPS, localhost); plain HTTP on a LAN has getRandomValues.
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  async function submit() {
    if (!data.editable || state.submitting) return;
    if (!state.labels.length) { setStatus("Add at least one label before submitting", "error"); return; }
    clearTimeout(saveTimer);
    while (state.saving) await new Promise((r) => setTimeout(r, 50));
    state.submitting = true;
    setStatus("Submitting…", "saving");
    const body = { labels: state.labels, version: state.version, key: idempotencyKey(), lead_time: takeLeadTime() };
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        const { status, payload } = await post(data.urls.submit, body);  // the same key on a retry: applied once
        if (status === 200) { state.dirty = false; window.location.assign(payload.next); return; }
        state.submitting = false;
        if (status === 409 && payload.code === "lease") { leaseLost(payload.error); return; }
        if (status === 409) { showConflict(payload); return; }
        setStatus(payload.error || `Not submitted (error ${status})`, "error");
        return;
      } catch (e) {
        await new Promise((r) => setTimeout(r, 1000 * (attempt + 1)));
      }
    }
    state.submitting = false;
    setStatus("Not submitted: the server did not answer. Try again.", "error");
  }
  if ($("submit")) $("submit").addEventListener("click", submit);

  // --- heartbeat ---------------------------------------------------------------------------------------
  if (data.editable) {
    const every = Math.max(15, Math.min(60, (data.leaseSeconds || 1800) / 3)) * 1000;
    setInterval(async () => {
      const response = await fetch(data.urls.heartbeat, {
        method: "POST", credentials: "same-origin", headers: { "X-CSRFToken": csrf() },
      }).catch(() => null);
      if (response && response.status === 409) {
        const payload = await response.json().catch(() => ({}));
        setStatus(payload.error || "You no longer hold this clip", "error");
      }
    }, every);
  }

  // --- player and transcript ---------------------------------------------------------------------------
  const SPEEDS = [0.5, 0.75, 1, 1.25, 1.5, 2];
  const speed = $("speed");
  const playButton = document.querySelector('[data-action="play"]');
  function seek(t) { video.currentTime = Math.max(0, Math.min(video.duration || t, t)); }
  function frame(n) { video.pause(); seek(video.currentTime + n / (data.fps || 25)); }
  function setSpeed(v) { video.playbackRate = v; speed.value = String(v); }
  function togglePlay() { if (video.paused) video.play(); else video.pause(); }
  const actions = {
    replay: () => { seek(0); video.play(); }, back: () => seek(video.currentTime - 2),
    forward: () => seek(video.currentTime + 2), play: togglePlay,
    "frame-back": () => frame(-1), "frame-forward": () => frame(1),
  };
  for (const b of document.querySelectorAll(".controls [data-action]")) {
    b.addEventListener("click", () => actions[b.dataset.action]());
  }
  speed.addEventListener("change", () => setSpeed(Number(speed.value)));
  video.addEventListener("play", () => { playButton.textContent = "Pause"; });
  video.addEventListener("pause", () => { playButton.textContent = "Play"; });
  const cues = Array.from(document.querySelectorAll("#transcript .cue"));
  for (const cue of cues) cue.addEventListener("click", () => { seek(Number(cue.dataset.start)); video.play(); });
  video.addEventListener("timeupdate", () => {
    const t = video.currentTime;
    $("time").textContent = `${t.toFixed(2)} s`;
    for (const cue of cues) {
      const on = t >= Number(cue.dataset.start) && t < Number(cue.dataset.end);
      if (on !== cue.classList.contains("current")) {
        cue.classList.toggle("current", on);
        if (on) cue.scrollIntoView({ block: "nearest" });
      }
    }
  });

  // --- dialogs -----------------------------------------------------------------------------------------
  function openDialog(id) { const d = $(id); if (d && !d.open) d.showModal(); }
  for (const b of document.querySelectorAll("[data-open]")) b.addEventListener("click", () => openDialog(b.dataset.open));

  // --- keys --------------------------------------------------------------------------------------------
  // Space and Enter on a focused button, link, summary or the video are that control's own; text boxes and
  // selects keep every key. Ctrl+Enter submits from anywhere but a link (where it opens a new tab).
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey && event.key === "Enter") {
      if (event.target instanceof Element && event.target.closest("a[href]")) return;
      event.preventDefault(); submit(); return;
    }
    if (controlOwnsKey(event) || document.querySelector("dialog[open]")) return;
    if (event.altKey && !["ArrowUp", "ArrowDown"].includes(event.key) || event.metaKey || event.ctrlKey) return;
    const i = state.selected;
    const keys = {
      " ": togglePlay, ArrowLeft: () => seek(video.currentTime - 2), ArrowRight: () => seek(video.currentTime + 2),
      ",": () => frame(-1), ".": () => frame(1), r: actions.replay,
      "[": () => setSpeed(SPEEDS[Math.max(0, SPEEDS.indexOf(video.playbackRate) - 1)] || 1),
      "]": () => setSpeed(SPEEDS[Math.min(SPEEDS.length - 1, SPEEDS.indexOf(video.playbackRate) + 1)] || 1),
      a: acceptAll, "+": () => input && input.focus(), Delete: () => removeLabel(i), x: () => removeLabel(i),
      Backspace: () => removeLabel(i), f: () => toggleEvidence(i, "face"), v: () => toggleEvidence(i, "voice"),
      w: () => toggleEvidence(i, "words"), n: () => editNote(i),
      s: () => $("skip-reason") && $("skip-reason").focus(), g: () => openDialog("guidelines-dialog"),
      "?": () => openDialog("keys-dialog"),
    };
    if (event.altKey && event.key === "ArrowUp") { event.preventDefault(); moveLabel(i, -1); return; }
    if (event.altKey && event.key === "ArrowDown") { event.preventDefault(); moveLabel(i, 1); return; }
    if (/^[1-9]$/.test(event.key)) { select(Number(event.key) - 1); event.preventDefault(); return; }
    const handler = keys[event.key];
    if (handler) { event.preventDefault(); handler(); }
  });

  render();
})();
