// Shared by the clip page (clip.js) and the review page (review.js): which keys belong to the focused control
// rather than to the page's single-key shortcuts, and the label autocomplete over the project vocabulary.
// Loaded (deferred) before the page's own script. Labels are always put into the page with textContent.
(function () {
  "use strict";

  // Everything typed here is text (or a choice) for the control itself.
  const TEXT_ENTRY = "input, textarea, select, [contenteditable]:not([contenteditable=false])";
  // Space and Enter activate these (a link: Enter follows it, Space scrolls the page; a summary opens its
  // details; a focused <video controls> plays and pauses itself).
  const ACTIVATES = "button, a[href], summary, video, audio, [role=button], [role=link], [role=checkbox], " +
    "[role=switch], [role=option], [role=tab], [role=menuitem]";

  // True when the key belongs to the focused control, so a page shortcut must leave it alone.
  function controlOwnsKey(event) {
    const target = event.target;
    if (!(target instanceof Element)) return false;
    if (target.closest(TEXT_ENTRY) || target.isContentEditable) return true;
    return (event.key === " " || event.key === "Enter") && target.closest(ACTIVATES) !== null;
  }

  // The combobox behind "add a label": type, the vocabulary answers (GET url?q=… → {"results": [...]}),
  // ↑/↓ move, Enter takes the exact word or the highlighted one (or hands an unknown word to onUnknown),
  // Escape clears and leaves the box. onPick gets a result {word, term, family, …}.
  function autocomplete(input, box, { url, onPick, onUnknown }) {
    let results = [], active = -1, timer = null, asked = null, answered = "";
    if (!box.id) box.id = `${input.id || "label-input"}-suggestions`;
    input.setAttribute("role", "combobox");
    input.setAttribute("aria-autocomplete", "list");
    input.setAttribute("aria-controls", box.id);
    input.setAttribute("aria-expanded", "false");
    box.setAttribute("role", "listbox");

    function show() {
      box.replaceChildren(...results.map((r, i) => {
        const li = document.createElement("li");
        li.id = `${box.id}-${i}`;
        li.setAttribute("role", "option");
        li.className = i === active ? "active" : "";
        li.setAttribute("aria-selected", String(i === active));
        li.textContent = r.word;
        if (r.term && r.word !== r.term) {
          const t = document.createElement("span");
          t.className = "muted";
          t.textContent = ` → ${r.term}`;
          li.append(t);
        }
        if (r.family) {
          const f = document.createElement("span");
          f.className = "family";
          f.textContent = r.family;
          li.append(" ", f);
        }
        li.addEventListener("mousedown", (event) => { event.preventDefault(); pick(i); });
        return li;
      }));
      box.hidden = results.length === 0;
      input.setAttribute("aria-expanded", String(results.length > 0));
      if (active >= 0 && results.length) input.setAttribute("aria-activedescendant", `${box.id}-${active}`);
      else input.removeAttribute("aria-activedescendant");
    }
    function close() { results = []; active = -1; show(); }
    function clear() { input.value = ""; answered = ""; close(); }

    async function query() {
      const q = input.value.trim();
      asked = q;
      if (!q) { answered = q; close(); return; }
      let found;
      try {
        const response = await fetch(`${url}?q=${encodeURIComponent(q)}`, { credentials: "same-origin" });
        if (!response.ok) return;
        found = (await response.json()).results || [];
      } catch (e) {
        return;  // offline: the list stays as it was; Enter still works on what it shows
      }
      if (q !== asked) return;  // a newer query is on its way
      results = found;
      active = results.length ? 0 : -1;
      answered = q;
      show();
    }
    function pick(i) {
      const r = results[i];
      clear();
      onPick(r);
    }
    async function enter() {
      const typed = input.value.trim();
      if (!typed) return;
      if (answered !== typed) {  // typed faster than the debounce: ask now, then decide on the answer
        clearTimeout(timer);
        await query();
        if (input.value.trim() !== typed) return;
      }
      const exact = results.findIndex((r) => r.word.toLowerCase() === typed.toLowerCase());
      if (exact >= 0) pick(exact);
      else if (active >= 0 && results.length) pick(active);
      else if (onUnknown) onUnknown(typed);
    }

    input.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(query, 120); });
    input.addEventListener("keydown", (event) => {
      if (event.key === "ArrowDown" && results.length) {
        active = (active + 1) % results.length; show(); event.preventDefault();
      } else if (event.key === "ArrowUp" && results.length) {
        active = (active - 1 + results.length) % results.length; show(); event.preventDefault();
      } else if (event.key === "Enter" && !event.ctrlKey && !event.metaKey) {
        event.preventDefault();  // never submits the surrounding form
        enter();
      } else if (event.key === "Escape") {
        clear();
        input.blur();
      }
    });
    // Late enough for a click on a suggestion to land; skipped when the box has been focused again
    // meanwhile (`+` right after Escape), or it would wipe the new word's suggestions.
    input.addEventListener("blur", () => setTimeout(() => { if (document.activeElement !== input) close(); }, 150));
    return { clear, close };
  }

  window.Affectloop = Object.assign(window.Affectloop || {}, { controlOwnsKey, autocomplete });
})();
