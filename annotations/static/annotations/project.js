// Poll the project's status while any clip is still being processed; reload once they have settled so the
// thumbnails and durations appear. Stops polling when nothing is pending.
(function () {
  const counts = document.getElementById("counts");
  if (!counts) return;
  const url = counts.dataset.statusUrl;
  const busy = () => document.querySelector('[data-status="pending"], [data-status="processing"]');
  const prelabelBusy = () => {
    const q = document.querySelector('[data-prelabel="queued"]');
    return q && q.textContent.trim() !== "0";
  };
  if (!busy() && !prelabelBusy()) return;
  async function tick() {
    try {
      const res = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
      if (!res.ok) throw new Error(res.status);
      const data = await res.json();
      for (const [status, n] of Object.entries(data.counts)) {
        const el = counts.querySelector(`[data-count="${status}"]`);
        if (el) el.textContent = n;
      }
      if (data.prelabel) {
        for (const [key, value] of Object.entries(data.prelabel)) {
          const el = document.querySelector(`[data-prelabel="${key}"]`);
          if (el) el.textContent = value;
        }
        const list = document.getElementById("prelabel-errors");
        if (list) {
          list.replaceChildren(...data.prelabel.errors.map((e) => {
            const li = document.createElement("li");
            li.className = "error";
            li.textContent = `${e.original_name}: ${e.prelabel_error}`;  // text, never HTML
            return li;
          }));
        }
      }
      const changed = data.clips.some((c) => {
        const row = document.getElementById(`clip-${c.id}`);
        return row && row.dataset.status !== c.status;
      });
      if (changed) { window.location.reload(); return; }
    } catch (e) { /* transient: try again on the next tick */ }
    if (busy() || prelabelBusy()) setTimeout(tick, 1500);
  }
  setTimeout(tick, 1000);
})();
