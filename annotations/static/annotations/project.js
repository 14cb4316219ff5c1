// The project page. Live progress: poll status.json while the server says more is coming (`busy`: clips being
// processed, or waiting to be queued or run for pre-labeling) and refresh the clip list when it changes.
// Upload: the form, or files dropped on its card, sent by XMLHttpRequest for a progress bar and one result
// line per file. Without this script the form posts as usual and the server answers with messages.
(function () {
  "use strict";
  const counts = document.getElementById("counts");
  if (!counts) return;
  const statusUrl = counts.dataset.statusUrl;

  // --- live progress -------------------------------------------------------------------------------------
  let polling = false;
  let quiet = 0;  // ticks without a change: a long wait (a model loading, no worker) is polled less often

  function setPolling(on) {
    polling = on;
    counts.dataset.polling = on ? "on" : "off";
  }

  // Swap in the server's clip list (not a reload, which would drop the upload's result lines).
  async function refreshClips() {
    const res = await fetch(window.location.href, { credentials: "same-origin", headers: { Accept: "text/html" } });
    if (!res.ok) throw new Error(res.status);
    const fresh = new DOMParser().parseFromString(await res.text(), "text/html").getElementById("clips");
    const here = document.getElementById("clips");
    if (fresh && here) here.replaceWith(document.adoptNode(fresh));
  }

  function show(data) {
    for (const [status, n] of Object.entries(data.counts)) {
      const el = counts.querySelector(`[data-count="${status}"]`);
      if (el) el.textContent = n;
    }
    if (!data.prelabel) return;
    for (const [key, value] of Object.entries(data.prelabel)) {
      const el = document.querySelector(`[data-prelabel="${key}"]`);
      if (el) el.textContent = value;
    }
    const list = document.getElementById("prelabel-errors");
    if (list) {
      list.replaceChildren(...data.prelabel.errors.map((e) => {
        const li = document.createElement("li");
        li.className = "error";
        li.textContent = `${e.name}: ${e.prelabel_error}`;  // text, never HTML
        return li;
      }));
    }
  }

  async function tick() {
    let busy = true;  // a failed request is transient: try again
    let changed = false;
    try {
      const res = await fetch(statusUrl, { headers: { Accept: "application/json" }, credentials: "same-origin" });
      if (!res.ok) throw new Error(res.status);
      const data = await res.json();
      show(data);
      const rows = new Map(Array.from(document.querySelectorAll("tr[data-clip]"), (r) => [r.dataset.clip, r.dataset.status]));
      changed = data.clips.length !== rows.size || data.clips.some((c) => rows.get(String(c.id)) !== c.status);
      if (changed) await refreshClips();
      busy = data.busy;
    } catch (e) { /* retried below */ }
    quiet = changed ? 0 : quiet + 1;
    if (busy) setTimeout(tick, quiet > 40 ? 10000 : quiet > 10 ? 4000 : 1500);
    else setPolling(false);
  }

  function poll() {
    quiet = 0;
    if (polling) return;
    setPolling(true);
    tick();
  }

  poll();  // at once: the first answer also fills the counts only status.json has (empty, flagged, waiting)

  // --- upload --------------------------------------------------------------------------------------------
  const form = document.getElementById("upload-form");
  if (!form || !window.FormData) return;
  const card = document.getElementById("upload");
  const zone = document.getElementById("dropzone");
  const input = form.querySelector('input[type="file"]');
  const button = form.querySelector('button[type="submit"]');
  const progress = document.getElementById("upload-progress");
  const bar = document.getElementById("upload-bar");
  const state = document.getElementById("upload-state");
  const results = document.getElementById("upload-results");
  let sending = false;
  for (const el of card.querySelectorAll("[data-js-only]")) el.hidden = false;

  function csrfToken() {
    const m = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    if (m) return decodeURIComponent(m[1]);
    const field = form.querySelector('input[name="csrfmiddlewaretoken"]');
    return field ? field.value : "";
  }

  function setProgress(fraction) {
    bar.value = Math.round(fraction * 100);
    state.textContent = fraction < 1 ? `${bar.value}% sent` : "100% sent: checking the files…";
  }

  function report(lines) {
    const level = { imported: "msg-success", duplicate: "msg-warning" };
    results.classList.add("messages");
    results.replaceChildren(...lines.map((r) => {
      const li = document.createElement("li");
      li.className = level[r.status] || "msg-error";
      li.dataset.status = r.status;
      if (r.file) li.dataset.file = r.file;
      li.textContent = r.line;  // text, never HTML: file names are the user's
      return li;
    }));
    const tally = {};
    for (const r of lines) if (r.file !== undefined) tally[r.status] = (tally[r.status] || 0) + 1;
    state.textContent = Object.entries(tally).map(([s, n]) => `${n} ${s}`).join(", ") || "nothing imported";
  }

  function answer(xhr) {
    let data = null;
    if ((xhr.getResponseHeader("Content-Type") || "").includes("application/json")) {
      try { data = JSON.parse(xhr.responseText); } catch (e) { data = null; }
    }
    if (data && Array.isArray(data.results)) {
      return data.results.concat((data.errors || []).map((e) => ({ status: "rejected", line: e })));
    }
    let line = `The upload failed: the server answered ${xhr.status} ${xhr.statusText}.`;
    if (xhr.responseURL && new URL(xhr.responseURL).pathname.includes("/accounts/")) {
      line = "You are no longer logged in: log in again and upload the files again.";
    } else if (xhr.status === 413) {
      line = `The upload is too large: ${xhr.responseText}`;
    }
    return [{ status: "rejected", line }];
  }

  function finish(lines) {
    sending = false;
    button.disabled = false;
    input.value = "";
    report(lines);
    poll();  // the new clips are processed next
  }

  function send(files) {
    if (sending) return;
    if (!files.length) { report([{ status: "rejected", line: "Choose at least one video file." }]); return; }
    const data = new FormData(form);
    data.delete("files");
    for (const f of files) data.append("files", f, f.name);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", form.action);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.setRequestHeader("X-Requested-With", "fetch");
    xhr.setRequestHeader("X-CSRFToken", csrfToken());
    xhr.upload.addEventListener("progress", (e) => { if (e.lengthComputable && e.total) setProgress(e.loaded / e.total); });
    xhr.upload.addEventListener("load", () => setProgress(1));
    xhr.addEventListener("load", () => { setProgress(1); finish(answer(xhr)); });
    xhr.addEventListener("error", () => finish([{ status: "rejected", line: "The upload failed: the server could not be reached. Try again." }]));
    xhr.addEventListener("abort", () => finish([{ status: "rejected", line: "The upload was cancelled." }]));
    sending = true;
    button.disabled = true;
    // The earlier page's messages (an older upload's, say) would read as this upload's.
    const stale = document.querySelector("main > ul.messages");
    if (stale) stale.remove();
    results.replaceChildren();
    progress.hidden = false;
    setProgress(0);
    state.textContent = `sending ${files.length} file(s)…`;
    xhr.send(data);
  }

  form.addEventListener("submit", (e) => { e.preventDefault(); send(Array.from(input.files)); });

  const hasFiles = (e) => e.dataTransfer && Array.from(e.dataTransfer.types || []).includes("Files");
  // A drop that misses the card must not open the file in this tab (leaving the page).
  for (const type of ["dragover", "drop"]) {
    document.addEventListener(type, (e) => { if (hasFiles(e)) e.preventDefault(); });
  }
  for (const type of ["dragenter", "dragover"]) {
    card.addEventListener(type, (e) => {
      if (!hasFiles(e)) return;
      e.preventDefault();
      e.dataTransfer.dropEffect = "copy";
      zone.classList.add("dragover");
    });
  }
  card.addEventListener("dragleave", (e) => { if (!card.contains(e.relatedTarget)) zone.classList.remove("dragover"); });
  card.addEventListener("drop", (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    zone.classList.remove("dragover");
    send(Array.from(e.dataTransfer.files));
  });
})();
