// The review page: the same player keys as the clip page, the transcript, the review lease's heartbeat, and
// the chip editor that replaces each "fix and accept" text field. No inline script (CSP): the page's data
// comes from the JSON block #review-data. Without this script the forms still work as plain HTML.
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("review-data").textContent);
  const { controlOwnsKey, autocomplete } = window.Affectloop;  // labels.js, loaded before this file
  const video = document.getElementById("video");
  const csrf = () => (document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/) || [])[1] || "";

  // --- player and transcript ---------------------------------------------------------------------------
  const seek = (t) => { video.currentTime = Math.max(0, Math.min(video.duration || t, t)); };
  const actions = {
    replay: () => { seek(0); video.play(); }, back: () => seek(video.currentTime - 2),
    forward: () => seek(video.currentTime + 2), play: () => (video.paused ? video.play() : video.pause()),
    "frame-back": () => { video.pause(); seek(video.currentTime - 1 / data.fps); },
    "frame-forward": () => { video.pause(); seek(video.currentTime + 1 / data.fps); },
  };
  for (const b of document.querySelectorAll(".controls [data-action]")) b.addEventListener("click", () => actions[b.dataset.action]());
  const speed = document.getElementById("speed");
  speed.addEventListener("change", () => { video.playbackRate = Number(speed.value); });
  const cues = Array.from(document.querySelectorAll("#transcript .cue"));
  for (const cue of cues) cue.addEventListener("click", () => { seek(Number(cue.dataset.start)); video.play(); });
  video.addEventListener("timeupdate", () => {
    document.getElementById("time").textContent = `${video.currentTime.toFixed(2)} s`;
    for (const cue of cues) cue.classList.toggle("current", video.currentTime >= Number(cue.dataset.start) && video.currentTime < Number(cue.dataset.end));
  });
  // Keys typed into a text box, and Space/Enter on a focused button, link, summary or the video, belong to
  // that control: the shortcuts only take what no control wants.
  document.addEventListener("keydown", (event) => {
    if (controlOwnsKey(event) || event.ctrlKey || event.metaKey || event.altKey) return;
    const keys = { " ": actions.play, ArrowLeft: actions.back, ArrowRight: actions.forward, ",": actions["frame-back"],
                   ".": actions["frame-forward"], r: actions.replay };
    if (keys[event.key]) { event.preventDefault(); keys[event.key](); }
  });

  // --- the review lease --------------------------------------------------------------------------------
  // Beat at a third of the lease (never more often than every 10 s). A 409 means the clip is no longer
  // this reviewer's (expired and taken, or a manager released it): stop and say so on the page.
  const leaseSeconds = Number(data.leaseSeconds) > 0 ? Number(data.leaseSeconds) : 180;  // absent: every 60 s
  const beatMs = Math.max(10, leaseSeconds / 3) * 1000;
  function leaseLost(message) {
    const banner = document.getElementById("lease-banner");
    if (!banner) return;
    const strong = document.createElement("strong");
    strong.textContent = "You no longer hold this clip for review.";
    const reload = document.createElement("a");
    reload.href = window.location.pathname;
    reload.textContent = "Reload the page";
    banner.replaceChildren(strong, " ", message ? `${message} ` : "",
      "A verdict you give now may be refused. ", reload, " to see whether it is still open to you.");
    banner.hidden = false;
  }
  const heartbeat = setInterval(async () => {
    let response;
    try {
      response = await fetch(data.urls.heartbeat, {
        method: "POST", credentials: "same-origin", headers: { "X-CSRFToken": decodeURIComponent(csrf()) },
        body: new URLSearchParams({ kind: "review" }),
      });
    } catch (e) {
      return;  // offline for a moment: the next beat tries again
    }
    if (response.status === 409) {
      clearInterval(heartbeat);
      const payload = await response.json().catch(() => ({}));
      leaseLost(payload.error);
    }
  }, beatMs);

  // --- "fix and accept": a chip editor over the plain labels field ----------------------------------------
  // The form still posts `labels` as the comma-separated chosen words (labels never contain commas): the
  // editor keeps the original field, hidden, in step with the chips.
  const norm = (w) => w.trim().replace(/\s+/g, " ");
  function chipEditor(form) {
    const field = form.querySelector("input[name=labels]");
    const words = [];
    const unlisted = new Set();  // typed words the vocabulary does not know: marked, still allowed
    for (const w of field.value.split(",").map(norm)) if (w && !has(w)) words.push(w);
    function has(w) { return words.some((x) => x.toLowerCase() === w.toLowerCase()); }

    const editor = document.createElement("div");
    editor.className = "fix-editor";
    const list = document.createElement("ul");
    list.className = "fix-chips";
    list.setAttribute("aria-label", "Corrected labels, in order");
    const wrap = document.createElement("div");
    wrap.className = "autocomplete fix-add";
    const input = document.createElement("input");
    input.type = "text";
    input.id = `${field.id}-add`;
    input.autocomplete = "off";
    input.spellcheck = false;
    input.placeholder = "add a label…";
    input.title = "Type, ↑/↓ to choose, Enter to add. On a chip: Delete removes, Alt+↑/Alt+↓ move it.";
    const box = document.createElement("ul");
    box.id = `${field.id}-suggestions`;
    box.className = "suggestions";
    box.hidden = true;
    const problem = document.createElement("p");
    problem.className = "fix-problem error small";
    problem.setAttribute("aria-live", "polite");
    wrap.append(input, box);
    editor.append(list, wrap, problem);
    field.after(editor);
    field.hidden = true;
    const label = form.querySelector(`label[for="${field.id}"]`);
    if (label) label.htmlFor = input.id;
    form.classList.add("enhanced");

    function say(text) { problem.textContent = text; }
    function button(text, name, onClick) {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = text;
      b.setAttribute("aria-label", name);
      b.title = name;
      b.addEventListener("click", onClick);
      return b;
    }
    // Re-draw the chips, put the field in step, and put the focus back where the keyboard user was.
    function render(focus) {
      list.replaceChildren(...words.map((w, i) => {
        const li = document.createElement("li");
        li.className = "chip fix-chip" + (unlisted.has(w.toLowerCase()) ? " unlisted" : "");
        li.dataset.index = String(i);
        const term = document.createElement("span");
        term.className = "term";
        term.textContent = w;
        if (unlisted.has(w.toLowerCase())) li.title = "Not in the project's vocabulary";
        const earlier = button("◂", `Move ${w} earlier`, () => move(i, -1, "earlier"));
        earlier.className = "earlier";
        earlier.disabled = i === 0;
        const later = button("▸", `Move ${w} later`, () => move(i, 1, "later"));
        later.className = "later";
        later.disabled = i === words.length - 1;
        const remove = button("×", `Remove ${w}`, () => removeAt(i));
        remove.className = "remove";
        li.append(term, earlier, later, remove);
        return li;
      }));
      field.value = words.join(", ");
      if (!focus) return;
      const li = list.children[focus.index];
      const target = li && [focus.kind, "earlier", "later", "remove"]
        .map((k) => li.querySelector(`button.${k}`)).find((b) => b && !b.disabled);
      (target || input).focus();
    }
    function add(word, known) {
      const w = norm(word);
      if (!w) return;
      if (has(w)) { say(`“${w}” is already in the list.`); return; }
      if (!known) unlisted.add(w.toLowerCase());
      words.push(w);
      say("");
      render();
    }
    function removeAt(i) {
      words.splice(i, 1);
      say("");
      render({ index: Math.min(i, words.length - 1), kind: "remove" });
    }
    function move(i, delta, kind) {
      const j = i + delta;
      if (j < 0 || j >= words.length) return;
      [words[i], words[j]] = [words[j], words[i]];
      render({ index: j, kind });
    }
    list.addEventListener("keydown", (event) => {
      const li = event.target.closest(".fix-chip");
      if (!li) return;
      const i = Number(li.dataset.index);
      if (event.key === "Delete" || event.key === "Backspace") { event.preventDefault(); removeAt(i); }
      else if (event.altKey && event.key === "ArrowUp") { event.preventDefault(); move(i, -1, "earlier"); }
      else if (event.altKey && event.key === "ArrowDown") { event.preventDefault(); move(i, 1, "later"); }
    });
    autocomplete(input, box, {
      url: data.urls.vocabulary,
      onPick: (r) => add(r.word, true),
      // A reviewer may correct to a word the vocabulary lacks (as the plain field allowed): it is marked.
      onUnknown: (typed) => { for (const w of typed.split(",")) add(w, false); input.value = ""; },
    });
    form.addEventListener("submit", (event) => {
      if (norm(input.value)) {
        event.preventDefault();
        say(`Press Enter to add “${norm(input.value)}”, or clear the box.`);
        input.focus();
      } else if (!words.length) {
        event.preventDefault();
        say("Keep at least one label, or reject the annotation instead.");
        input.focus();
      } else {
        field.value = words.join(", ");
      }
    });
    render();
  }
  for (const form of document.querySelectorAll("form.fix-form")) {
    if (form.querySelector("input[name=labels]")) chipEditor(form);
  }
})();
