// The review page: the same player keys as the clip page, the transcript, and the review lease's heartbeat.
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("review-data").textContent);
  const video = document.getElementById("video");
  const csrf = () => (document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/) || [])[1] || "";
  const seek = (t) => { video.currentTime = Math.max(0, t); };
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
  document.addEventListener("keydown", (event) => {
    if (event.target.matches("input, textarea, select") || event.ctrlKey || event.metaKey || event.altKey) return;
    const keys = { " ": actions.play, ArrowLeft: actions.back, ArrowRight: actions.forward, ",": actions["frame-back"],
                   ".": actions["frame-forward"], r: actions.replay };
    if (keys[event.key]) { event.preventDefault(); keys[event.key](); }
  });
  setInterval(() => {
    const body = new URLSearchParams({ kind: "review" });
    fetch(data.urls.heartbeat, { method: "POST", credentials: "same-origin", headers: { "X-CSRFToken": decodeURIComponent(csrf()) }, body });
  }, 60000);
})();
