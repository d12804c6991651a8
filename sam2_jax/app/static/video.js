// sam2-jax annotate, video view: click objects on any frame, track (streamed, cancellable), scrub, correct.
// The frame and its overlay are drawn in <canvas id="frame"> at the video's resolution and scaled uniformly, so an
// image coordinate is (client x - element left) x canvas width / element width (and the same for y).
// State the tests read: window.sam2Video = {frame, tracked (Set), job, objects, selected, drawn (frame:version
// of the overlay on screen), timings (ms from a scrub to its overlay drawn)}.
(function () {
  "use strict";
  const TOKEN = new URLSearchParams(location.search).get("token");
  const $ = (id) => document.getElementById(id);
  const canvas = $("frame"), ctx = canvas.getContext("2d");
  const S = (window.sam2Video = {
    frame: 0, frames: 0, width: 0, height: 0, tracked: new Set(), objects: [], colors: {}, selected: null,
    job: null, drawn: null, timings: [], version: {}, prompts: {},
  });
  const cache = new Map(); // url -> Promise<HTMLImageElement>

  function status(text, error) {
    const el = $("status");
    el.textContent = text || "";
    el.className = error ? "error" : "";
  }
  // a call made from an event: its failure is shown in the status line (api() already put a refusal there)
  const shown = (promise) => promise.catch((e) => status(e.message, true));
  async function api(method, path, body) {
    const headers = {};
    if (TOKEN) headers["X-Sam2-Token"] = TOKEN;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const data = await r.json().catch(() => null);
    if (!r.ok) {
      const message = `${r.status}: ${data && data.error ? data.error : r.statusText}`;
      status(message, true);
      throw new Error(message);
    }
    return data;
  }
  function image(url) {
    if (!cache.has(url)) {
      cache.set(url, new Promise((resolve, reject) => {
        const img = new Image();
        img.onload = () => resolve(img);
        img.onerror = () => { cache.delete(url); reject(new Error(`cannot load ${url}`)); };
        img.src = url + (TOKEN ? `${url.includes("?") ? "&" : "?"}token=${TOKEN}` : "");
      }));
      if (cache.size > 400) cache.delete(cache.keys().next().value);
    }
    return cache.get(url);
  }
  const frameUrl = (t) => `/api/video/frames/${t}/file`;
  const overlayUrl = (t) => `/api/video/frames/${t}/overlay?v=${S.version[t] || 0}`;

  // ---------------------------------------------------------------- drawing
  function fit() {
    const vp = $("viewport").getBoundingClientRect();
    const k = Math.min(vp.width / S.width, vp.height / S.height);
    canvas.style.width = `${S.width * k}px`;
    canvas.style.height = `${S.height * k}px`;
    canvas.style.left = `${(vp.width - S.width * k) / 2}px`;
    canvas.style.top = `${(vp.height - S.height * k) / 2}px`;
  }
  let drawSeq = 0;
  async function draw(t0) {
    const seq = ++drawSeq, t = S.frame;
    const wanted = [image(frameUrl(t))];
    if (S.tracked.has(t) || S.version[t]) wanted.push(image(overlayUrl(t)));
    let imgs;
    try { imgs = await Promise.all(wanted); } catch (e) { status(e.message, true); return; }
    if (seq !== drawSeq) return;
    ctx.drawImage(imgs[0], 0, 0);
    if (imgs[1]) ctx.drawImage(imgs[1], 0, 0);
    drawPrompts();
    S.drawn = `${t}:${S.version[t] || 0}`;
    if (t0 !== undefined) S.timings.push(performance.now() - t0);
    for (const d of [1, 2, -1]) { // the next frames, ahead of a scrub
      const u = t + d;
      if (u >= 0 && u < S.frames) { image(frameUrl(u)); if (S.tracked.has(u)) image(overlayUrl(u)); }
    }
  }
  function drawPrompts(box) {
    const r = Math.max(4, S.width / 200);
    for (const p of S.prompts[S.frame] || []) {
      ctx.beginPath();
      ctx.arc(p.x, p.y, r, 0, 2 * Math.PI);
      ctx.fillStyle = p.label ? "#22c55e" : "#ef4444";
      ctx.fill();
      ctx.lineWidth = r / 3;
      ctx.strokeStyle = "#fff";
      ctx.stroke();
    }
    if (box) {
      ctx.lineWidth = Math.max(2, S.width / 400);
      ctx.strokeStyle = "#facc15";
      ctx.strokeRect(box[0], box[1], box[2] - box[0], box[3] - box[1]);
    }
  }
  function drawStrip() {
    const strip = $("strip");
    strip.width = S.frames;
    const c = strip.getContext("2d");
    c.clearRect(0, 0, S.frames, 10);
    c.fillStyle = "#3b82d6";
    for (const t of S.tracked) c.fillRect(t, 0, 1, 10);
    c.fillStyle = "#facc15";
    for (const t of Object.keys(S.prompts)) c.fillRect(Number(t), 0, 1, 10);
  }
  function markStrip(frames) { // frames just tracked, on the strip as drawn (no redraw of the rest)
    const c = $("strip").getContext("2d");
    c.fillStyle = "#3b82d6";
    for (const t of frames) if (!S.prompts[t]) c.fillRect(t, 0, 1, 10);
  }
  function renderObjects() {
    const ul = $("objects");
    ul.innerHTML = "";
    for (const id of S.objects) {
      const li = document.createElement("li");
      li.dataset.id = id;
      li.className = id === S.selected ? "selected" : "";
      li.innerHTML = `<span class="swatch"></span><span>object ${id}</span><button title="remove">&times;</button>`;
      li.querySelector(".swatch").style.background = S.colors[id] || "#888";
      li.onclick = () => { S.selected = id; renderObjects(); };
      li.querySelector("button").onclick = (e) => { e.stopPropagation(); shown(removeObject(id)); };
      ul.appendChild(li);
    }
    if (S.selected !== null && !S.objects.includes(S.selected)) {
      const li = document.createElement("li");
      li.className = "selected";
      li.innerHTML = `<span class="swatch" style="background:#888"></span><span>object ${S.selected} (new)</span>`;
      ul.appendChild(li);
    }
  }
  function go(t, t0) {
    S.frame = Math.max(0, Math.min(S.frames - 1, t));
    $("timeline").value = S.frame;
    $("frame-text").textContent = `frame ${S.frame} / ${S.frames - 1}`;
    draw(t0);
  }

  // ---------------------------------------------------------------- prompts and objects
  function newObject() {
    S.selected = Math.max(0, ...S.objects, S.selected || 0) + 1;
    renderObjects();
  }
  async function prompt(body, marker) {
    if (S.selected === null) newObject();
    const t = S.frame;
    const data = await api("POST", "/api/video/prompts", { frame: t, obj_id: S.selected, ...body });
    if (marker) (S.prompts[t] = S.prompts[t] || []).push(marker);
    else S.prompts[t] = [];
    S.objects = data.objects;
    S.colors = data.colors;
    S.version[t] = (S.version[t] || 0) + 1;
    status("");
    renderObjects();
    drawStrip();
    if (S.frame === t) draw();
  }
  async function undo() {
    const data = await api("POST", "/api/video/undo");
    const t = data.frame;
    if (S.prompts[t] && S.prompts[t].length) S.prompts[t].pop();
    S.objects = data.objects;
    S.colors = data.colors;
    S.version[t] = (S.version[t] || 0) + 1;
    S.undone = (S.undone || 0) + 1;
    status("");
    renderObjects();
    drawStrip();
    if (S.frame === t) draw(); else go(t);
  }
  async function removeObject(id) {
    await api("DELETE", `/api/video/objects/${id}`);
    S.objects = S.objects.filter((x) => x !== id);
    if (S.selected === id) S.selected = S.objects.length ? S.objects[0] : null;
    renderObjects();
  }

  // ---------------------------------------------------------------- tracking
  async function track() {
    if (S.job && S.job.running) return;
    const job = await api("POST", "/api/video/track");
    S.job = job;
    $("btn-cancel").disabled = false;
    $("btn-track").disabled = true;
    let seen = 0;
    for (;;) { // a long poll: answered once a frame is done (or the job ends), so the page idles in between
      const s = await api("GET", `/api/video/track/next/${seen}`);
      seen += s.frames.length;
      for (const t of s.frames) { S.tracked.add(t); S.version[t] = (S.version[t] || 0) + 1; }
      if (s.frames.includes(S.frame)) draw();
      S.job = s;
      $("progress").value = s.total ? s.done / s.total : 0;
      $("track-text").textContent = `${s.done} / ${s.total} frames, ${s.fps.toFixed(1)} fps` +
        (s.cancelled ? " (cancelled)" : "") + (s.error ? ` error: ${s.error}` : "");
      markStrip(s.frames);
      if (!s.running) break;
    }
    $("btn-cancel").disabled = true;
    $("btn-track").disabled = false;
    if (S.job.error) status(S.job.error, true);
  }
  const cancel = () => api("POST", "/api/video/track/cancel");

  // ---------------------------------------------------------------- input
  function point(e) {
    const r = canvas.getBoundingClientRect();
    return [(e.clientX - r.left) * canvas.width / r.width, (e.clientY - r.top) * canvas.height / r.height];
  }
  let down = null;
  canvas.addEventListener("contextmenu", (e) => e.preventDefault());
  canvas.addEventListener("mousedown", (e) => { down = { p: point(e), neg: e.shiftKey || e.button === 2 }; });
  canvas.addEventListener("mousemove", (e) => {
    if (!down) return;
    const p = point(e);
    if (Math.hypot(p[0] - down.p[0], p[1] - down.p[1]) > S.width / 100) {
      down.box = [Math.min(down.p[0], p[0]), Math.min(down.p[1], p[1]), Math.max(down.p[0], p[0]),
        Math.max(down.p[1], p[1])];
      draw().then(() => down && drawPrompts(down.box));
    }
  });
  window.addEventListener("mouseup", (e) => {
    if (!down) return;
    const d = down;
    down = null;
    if (d.box) shown(prompt({ box: d.box.map((v, i) => Math.max(0, Math.min(i % 2 ? S.height : S.width, v))) }));
    else if (e.target === canvas) {
      const [x, y] = d.p;
      shown(prompt({ points: [[x, y]], labels: [d.neg ? 0 : 1], clear_old_points: false },
        { x, y, label: d.neg ? 0 : 1 }));
    }
  });
  document.addEventListener("keydown", (e) => {
    if (e.target.tagName === "INPUT" && e.target.type !== "range") return;
    const step = e.shiftKey ? 10 : 1;
    if (e.key === "ArrowRight") go(S.frame + step, performance.now());
    else if (e.key === "ArrowLeft") go(S.frame - step, performance.now());
    else if (e.key === "t") shown(track());
    else if (e.key === "Escape") shown(cancel());
    else if (e.key === "o") newObject();
    else if (e.key === "Backspace" || (e.key === "z" && (e.ctrlKey || e.metaKey))) shown(undo());
    else if (e.key === "Delete" && S.selected !== null && S.objects.includes(S.selected)) {
      shown(removeObject(S.selected));
    }
    else return;
    e.preventDefault();
  });
  $("timeline").addEventListener("input", (e) => go(Number(e.target.value), performance.now()));
  $("strip").addEventListener("click", (e) => {
    const r = e.target.getBoundingClientRect();
    go(Math.floor((e.clientX - r.left) / r.width * S.frames), performance.now());
  });
  const buttons = { "btn-back10": -10, "btn-back": -1, "btn-fwd": 1, "btn-fwd10": 10 };
  for (const [id, d] of Object.entries(buttons)) $(id).onclick = () => go(S.frame + d, performance.now());
  $("btn-new").onclick = newObject;
  $("btn-track").onclick = () => shown(track());
  $("btn-cancel").onclick = () => shown(cancel());
  window.addEventListener("resize", fit);

  (async function start() {
    const info = await api("GET", "/api/info");
    Object.assign(S, { frames: info.frames, width: info.width, height: info.height, objects: info.objects,
      colors: info.colors || {} });
    for (const t of info.tracked || []) S.tracked.add(t);
    S.selected = S.objects.length ? S.objects[0] : null;
    canvas.width = S.width;
    canvas.height = S.height;
    $("timeline").max = S.frames - 1;
    fit();
    renderObjects();
    drawStrip();
    go(0);
    S.ready = true;
  })().catch((e) => status(e.message, true));
})();
