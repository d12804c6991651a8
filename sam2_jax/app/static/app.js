// The page of `sam2-jax annotate`: click to segment, accept, review "segment everything" proposals.
// It talks to the server only through the JSON API of docs/annotate_api.md. Plain JavaScript, no build step.
//
// Conventions outside clients rely on: the photo is the element #image, scaled uniformly, so an image
// coordinate is (clientX - rect.left) * naturalWidth / rect.width (and the same for y), also under zoom and pan
// (the element itself is sized and moved; the overlay canvases lie exactly over it with pointer-events none).
// window.sam2Debug: timings (ms from each click to its mask drawn), state, lastError (the last API error),
// jsErrors (uncaught errors and rejections of the page).
"use strict";

(function () {
  const TOKEN = new URLSearchParams(location.search).get("token");
  const DRAG_PX = 5;
  const CURRENT_FILL = [30, 144, 255, 120];
  const CURRENT_EDGE = [255, 255, 255, 230];
  const PROPOSAL_FILL = [255, 196, 0, 130];
  const PROPOSAL_EDGE = [255, 240, 120, 255];
  const OBJECT_ALPHA = 105;
  const SELECTED_ALPHA = 185;

  const $ = (id) => document.getElementById(id);
  const el = {
    viewport: $("viewport"), image: $("image"), objectsLayer: $("objects-layer"),
    proposalLayer: $("proposal-layer"), currentLayer: $("current-layer"), promptLayer: $("prompt-layer"),
    status: $("status"), progress: $("progress"), info: $("info"), objects: $("objects"), photos: $("photos"),
    objectCount: $("object-count"), photoCount: $("photo-count"), category: $("category"),
    newCategory: $("new-category"), review: $("review"), reviewText: $("review-text"), pps: $("pps"),
    done: $("btn-done"),
  };
  const layers = [el.objectsLayer, el.proposalLayer, el.currentLayer, el.promptLayer];

  const state = {
    image: null, // the current photo's name
    index: -1, // its place in the listing
    width: 0, height: 0, // its natural size
    ready: false, // embedded, drawn, annotations loaded: clicks are taken
    embed: null, // the last embed state answered
    prompts: [], // [{type: "point", x, y, label} | {type: "box", box: [x0, y0, x1, y1]}], in order
    points: [], labels: [], box: null, // derived from prompts
    promptVersion: 0, // bumped by every change of the prompts
    drawnVersion: 0, // the prompt version whose prediction is drawn
    prediction: null, // the id of the prediction drawn
    candidate: 0, // its candidate shown
    scores: [], // its candidates' scores
    areas: [], // and areas
    inFlight: false, // a predict request is out
    settled: true, // the drawn prediction answers the current prompts, nothing in flight
    annotations: [], // ids of the current photo's objects
    selected: null, // the selected object's id
    job: null, // the running or last "segment everything" job id
    jobState: null,
    proposals: 0, // proposals of the job
    proposalIndex: -1, // the proposal under review, -1 when not reviewing
    accepting: false, // an accept request is out
    view: { scale: 1, tx: 0, ty: 0, fit: true },
  };
  const debug = {
    timings: [], state, lastError: null, errors: [], jsErrors: [],
    predictMs: [], // the server's own predict_ms of each drawn prediction
    breakdown: [], // of each drawn prediction: {request_ms (sent to answer parsed), draw_ms (decode and draw)}
    openMs: [], // [name, ms from asking for the photo to it being ready]
    generateOptions: {}, // more options of "segment everything" (pred_iou_thresh, stability_score_thresh)
  };
  {
    // ?points_per_side=8&pred_iou_thresh=0.5&stability_score_thresh=0.8&box_nms_thresh=0.9 in the page's URL
    const q = new URLSearchParams(location.search);
    for (const k of ["pred_iou_thresh", "stability_score_thresh", "box_nms_thresh"]) {
      if (q.get(k) !== null && q.get(k) !== "") debug.generateOptions[k] = Number(q.get(k));
    }
    if (q.get("points_per_side")) document.getElementById("pps").value = q.get("points_per_side");
  }
  window.sam2Debug = debug;
  window.addEventListener("error", (e) => debug.jsErrors.push(String(e.message || e.error)));
  window.addEventListener("unhandledrejection", (e) => {
    const r = e.reason;
    if (r && r.apiError) return; // already shown
    debug.jsErrors.push("unhandled rejection: " + String(r && r.message ? r.message : r));
  });

  let photos = []; // the listing
  let categories = [];
  let annotations = []; // the current photo's annotation objects
  let currentMasks = null; // the current prediction's masks (answer of /api/predict)
  let proposals = []; // the job's proposals
  let openSeq = 0; // bumped by every photo opened: late answers for an older photo are dropped
  let pendingClicks = []; // [{t0, version}] clicks whose mask is not drawn yet
  let settleWaiters = [];
  const runCache = new Map(); // annotation id -> decoded RLE counts

  // ---------------------------------------------------------------- status line
  function setStatus(text, kind) {
    el.status.textContent = text;
    el.status.className = kind === "error" ? "error" : "";
  }
  function setProgress(value) {
    if (value === null || value === undefined) {
      el.progress.hidden = true;
    } else {
      el.progress.hidden = false;
      el.progress.value = Math.max(0, Math.min(1, value));
    }
  }
  function showError(message) {
    debug.lastError = message;
    debug.errors.push(message);
    setStatus(message, "error");
  }

  // ---------------------------------------------------------------- API
  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
      this.apiError = true;
    }
  }
  function headers(json) {
    const h = {};
    if (TOKEN) h["X-Sam2-Token"] = TOKEN;
    if (json) h["Content-Type"] = "application/json";
    return h;
  }
  async function api(method, path, body) {
    let response;
    try {
      response = await fetch(path, {
        method, headers: headers(body !== undefined),
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (err) {
      const e = new ApiError(0, `${method} ${path}: the server cannot be reached (${err.message})`);
      showError(e.message);
      throw e;
    }
    let data = null;
    try {
      data = await response.json();
    } catch (err) {
      data = null;
    }
    if (!response.ok) {
      const reason = data && data.error ? data.error : response.statusText;
      const e = new ApiError(response.status, `${response.status}: ${reason}`);
      showError(e.message);
      throw e;
    }
    return data;
  }
  const enc = encodeURIComponent;
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  // ---------------------------------------------------------------- masks
  // COCO compressed RLE counts (pycocotools' rleFrString): 5 bits a char, 0x20 continues, 0x10 the sign,
  // counts after the second are deltas to the count two before.
  function decodeCounts(counts) {
    if (Array.isArray(counts)) return Uint32Array.from(counts);
    const out = [];
    let p = 0;
    while (p < counts.length) {
      let x = 0, k = 0, more = 1;
      while (more) {
        const c = counts.charCodeAt(p) - 48;
        x |= (c & 0x1f) << (5 * k);
        more = c & 0x20;
        p++;
        k++;
        if (!more && (c & 0x10)) x |= -1 << (5 * k);
      }
      if (out.length > 2) x += out[out.length - 2];
      out.push(x);
    }
    return Uint32Array.from(out);
  }
  function pixel([r, g, b, a]) {
    return ((a << 24) | (b << 16) | (g << 8) | r) >>> 0; // little-endian RGBA in a Uint32
  }
  function hexColor(hex, alpha) {
    const v = parseInt(String(hex || "#3b82d6").slice(1), 16);
    return [(v >> 16) & 255, (v >> 8) & 255, v & 255, alpha];
  }
  // Paint the ones of column-major runs into a row-major Uint32 buffer of w x h.
  function paintRuns(buf, w, h, runs, color) {
    let pos = 0;
    for (let i = 0; i < runs.length; i++) {
      const n = runs[i];
      if (i & 1) {
        let x = (pos / h) | 0, y = pos - x * h;
        for (let j = 0; j < n; j++) {
          buf[y * w + x] = color;
          if (++y === h) { y = 0; x++; }
        }
      }
      pos += n;
    }
  }
  // A mask with a light edge: fill inside, edge where a 4-neighbour is outside.
  function paintMaskWithEdge(buf, w, h, runs, fill, edge) {
    const m = new Uint8Array(w * h);
    let pos = 0;
    let x0 = w, x1 = -1;
    for (let i = 0; i < runs.length; i++) {
      const n = runs[i];
      if (i & 1 && n > 0) {
        let x = (pos / h) | 0, y = pos - x * h;
        if (x < x0) x0 = x;
        for (let j = 0; j < n; j++) {
          m[y * w + x] = 1;
          if (++y === h) { y = 0; x++; }
        }
        x1 = Math.max(x1, ((pos + n - 1) / h) | 0);
      }
      pos += n;
    }
    if (x1 < 0) return;
    for (let y = 0; y < h; y++) {
      const row = y * w;
      for (let x = x0; x <= x1; x++) {
        const i = row + x;
        if (!m[i]) continue;
        const inner = x > 0 && x < w - 1 && y > 0 && y < h - 1 && m[i - 1] && m[i + 1] && m[i - w] && m[i + w];
        buf[i] = inner ? fill : edge;
      }
    }
  }
  const imageDataCache = new Map();
  function layerBuffer(canvas) {
    const key = canvas.id;
    let d = imageDataCache.get(key);
    const ctx = canvas.getContext("2d");
    if (!d || d.width !== canvas.width || d.height !== canvas.height) {
      d = ctx.createImageData(canvas.width, canvas.height);
      imageDataCache.set(key, d);
    }
    const buf = new Uint32Array(d.data.buffer);
    buf.fill(0);
    return { ctx, d, buf };
  }

  function drawObjects() {
    const { ctx, d, buf } = layerBuffer(el.objectsLayer);
    for (const a of annotations) {
      let runs = runCache.get(a.id);
      if (!runs) {
        runs = decodeCounts(a.segmentation.counts);
        runCache.set(a.id, runs);
      }
      const alpha = a.id === state.selected ? SELECTED_ALPHA : OBJECT_ALPHA;
      paintRuns(buf, state.width, state.height, runs, pixel(hexColor(a.color, alpha)));
    }
    ctx.putImageData(d, 0, 0);
  }
  function drawCurrent() {
    const { ctx, d, buf } = layerBuffer(el.currentLayer);
    if (currentMasks) {
      const m = currentMasks.masks[state.candidate];
      const runs = decodeCounts(m.rle.counts);
      paintMaskWithEdge(buf, state.width, state.height, runs, pixel(CURRENT_FILL), pixel(CURRENT_EDGE));
    }
    ctx.putImageData(d, 0, 0);
  }
  function drawProposal() {
    const { ctx, d, buf } = layerBuffer(el.proposalLayer);
    if (state.proposalIndex >= 0 && state.proposalIndex < proposals.length) {
      const runs = decodeCounts(proposals[state.proposalIndex].rle.counts);
      paintMaskWithEdge(buf, state.width, state.height, runs, pixel(PROPOSAL_FILL), pixel(PROPOSAL_EDGE));
    }
    ctx.putImageData(d, 0, 0);
  }
  function drawPrompts(dragBox) {
    const c = el.promptLayer;
    const ctx = c.getContext("2d");
    ctx.clearRect(0, 0, c.width, c.height);
    const s = 1 / state.view.scale; // one screen pixel in image pixels
    const boxes = state.box ? [[state.box, false]] : [];
    if (dragBox) boxes.push([dragBox, true]);
    for (const [b, dashed] of boxes) {
      ctx.lineWidth = 2 * s;
      ctx.setLineDash(dashed ? [6 * s, 4 * s] : []);
      ctx.strokeStyle = "#000a";
      ctx.strokeRect(b[0], b[1], b[2] - b[0], b[3] - b[1]);
      ctx.lineWidth = 1.5 * s;
      ctx.strokeStyle = "#ffd400";
      ctx.strokeRect(b[0], b[1], b[2] - b[0], b[3] - b[1]);
    }
    ctx.setLineDash([]);
    for (let i = 0; i < state.points.length; i++) {
      const [x, y] = state.points[i];
      ctx.beginPath();
      ctx.arc(x, y, 6 * s, 0, 2 * Math.PI);
      ctx.fillStyle = state.labels[i] ? "#2ecc40" : "#ff4136";
      ctx.fill();
      ctx.lineWidth = 2 * s;
      ctx.strokeStyle = "#fff";
      ctx.stroke();
      if (!state.labels[i]) { // a minus sign on negatives
        ctx.beginPath();
        ctx.moveTo(x - 3 * s, y);
        ctx.lineTo(x + 3 * s, y);
        ctx.stroke();
      }
    }
  }

  // ---------------------------------------------------------------- view: zoom and pan
  function applyView() {
    const v = state.view;
    const w = state.width * v.scale, h = state.height * v.scale;
    for (const e of [el.image, ...layers]) {
      e.style.left = v.tx + "px";
      e.style.top = v.ty + "px";
      e.style.width = w + "px";
      e.style.height = h + "px";
    }
    el.info.textContent = state.image
      ? `${state.image}  ${state.width}\u00d7${state.height}  zoom ${Math.round(v.scale * 100)}%`
      : "";
    drawPrompts();
  }
  function fit() {
    if (!state.width) return;
    const vw = el.viewport.clientWidth, vh = el.viewport.clientHeight;
    const scale = Math.min(vw / state.width, vh / state.height);
    state.view = {
      scale, fit: true,
      tx: Math.round((vw - state.width * scale) / 2), ty: Math.round((vh - state.height * scale) / 2),
    };
    applyView();
  }
  function zoomAt(factor, cx, cy) {
    const v = state.view;
    const scale = Math.max(0.02, Math.min(40, v.scale * factor));
    const f = scale / v.scale;
    state.view = { scale, fit: false, tx: cx - (cx - v.tx) * f, ty: cy - (cy - v.ty) * f };
    applyView();
  }
  function zoomCentre(factor) {
    zoomAt(factor, el.viewport.clientWidth / 2, el.viewport.clientHeight / 2);
  }
  function pan(dx, dy) {
    state.view.tx += dx;
    state.view.ty += dy;
    state.view.fit = false;
    applyView();
  }
  window.addEventListener("resize", () => { if (state.view.fit) fit(); });

  // ---------------------------------------------------------------- lists
  function categoryName(id) {
    const c = categories.find((c) => c.id === id);
    return c ? c.name : String(id);
  }
  function categorySelect(selectedId, onChange) {
    const s = document.createElement("select");
    for (const c of categories) {
      const o = document.createElement("option");
      o.value = c.id;
      o.textContent = c.name;
      if (c.id === selectedId) o.selected = true;
      s.appendChild(o);
    }
    s.addEventListener("change", () => { onChange(Number(s.value)); s.blur(); });
    s.addEventListener("click", (e) => e.stopPropagation());
    return s;
  }
  function renderCategories() {
    const keep = Number(el.category.value) || (categories[0] && categories[0].id);
    el.category.textContent = "";
    for (const c of categories) {
      const o = document.createElement("option");
      o.value = c.id;
      o.textContent = c.name;
      if (c.id === keep) o.selected = true;
      el.category.appendChild(o);
    }
  }
  function renderObjects() {
    el.objects.textContent = "";
    state.annotations = annotations.map((a) => a.id);
    el.objectCount.textContent = `(${annotations.length})`;
    for (const a of annotations) {
      const li = document.createElement("li");
      li.dataset.id = a.id;
      if (a.id === state.selected) li.classList.add("selected");
      const sw = document.createElement("span");
      sw.className = "swatch";
      sw.style.background = a.color;
      const id = document.createElement("span");
      id.className = "id";
      id.textContent = "#" + a.id;
      const sel = categorySelect(a.category_id, (cid) => relabel(a.id, cid));
      const num = document.createElement("span");
      num.className = "num";
      const score = typeof a.score === "number" ? a.score.toFixed(2) : "-";
      num.textContent = `${a.area} px \u00b7 ${score}`;
      num.title = `area ${a.area} pixels, score ${score}, ${a.source}`;
      const del = document.createElement("button");
      del.className = "del";
      del.textContent = "\u00d7";
      del.title = "delete the object (Delete)";
      del.addEventListener("mousedown", (e) => e.preventDefault());
      del.addEventListener("click", (e) => { e.stopPropagation(); deleteObject(a.id); });
      li.append(sw, id, sel, num, del);
      li.addEventListener("click", () => selectObject(a.id === state.selected ? null : a.id));
      el.objects.appendChild(li);
    }
  }
  function renderPhotos() {
    el.photos.textContent = "";
    const done = photos.filter((p) => p.done).length;
    el.photoCount.textContent = `(${done}/${photos.length} done)`;
    photos.forEach((p, i) => {
      const li = document.createElement("li");
      if (p.name === state.image) li.classList.add("selected");
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = p.name;
      name.title = `${p.name} (${p.width}\u00d7${p.height})`;
      const num = document.createElement("span");
      num.className = "num";
      num.textContent = `${p.annotations} obj`;
      const d = document.createElement("span");
      d.className = "done";
      d.textContent = p.done ? "\u2713" : "";
      d.title = p.done ? "done" : "";
      li.append(name, num, d);
      li.addEventListener("click", () => openPhoto(i));
      el.photos.appendChild(li);
    });
    const cur = photos[state.index];
    el.done.textContent = cur && cur.done ? "mark not done" : "mark done";
  }
  async function refreshPhotos() {
    const data = await api("GET", "/api/images");
    photos = data.images;
    if (state.image) state.index = photos.findIndex((p) => p.name === state.image);
    renderPhotos();
  }
  function updatePhotoCount() {
    const p = photos.find((p) => p.name === state.image);
    if (p) p.annotations = annotations.length;
    renderPhotos();
  }

  // ---------------------------------------------------------------- photos
  async function openPhoto(index) {
    if (index < 0 || index >= photos.length) return;
    const seq = ++openSeq;
    const t0 = performance.now();
    const p = photos[index];
    state.ready = false;
    state.image = p.name;
    state.index = index;
    stopReview();
    proposals = [];
    state.job = null;
    state.jobState = null;
    state.proposals = 0;
    resetPrompts();
    annotations = [];
    state.selected = null;
    runCache.clear();
    renderPhotos();
    renderObjects();
    el.image.classList.remove("shown");
    setStatus(`opening ${p.name}\u2026`);
    setProgress(0);
    try {
      const [embed] = await Promise.all([
        embedPhoto(p.name, seq),
        loadImage(p, seq),
        api("GET", `/api/images/${enc(p.name)}/annotations`).then((d) => {
          if (seq === openSeq) annotations = d.annotations;
        }),
      ]);
      if (seq !== openSeq) return;
      if (embed.state !== "ready") throw new Error(`embedding ${embed.state}: ${embed.error || ""}`);
      drawObjects();
      renderObjects();
      updatePhotoCount();
      state.ready = true;
      const ms = performance.now() - t0;
      debug.openMs.push([p.name, ms]);
      setProgress(null);
      setStatus(`${p.name}: ready (${ms.toFixed(0)} ms) \u2014 click to segment`);
    } catch (err) {
      if (seq !== openSeq) return;
      setProgress(null);
      if (!err.apiError) showError(`cannot open ${p.name}: ${err.message}`);
    }
  }
  async function loadImage(p, seq) {
    // fetched with the token header, so it also works where the cookie is not set
    const response = await fetch(`/api/images/${enc(p.name)}/file`, { headers: headers(false) });
    if (!response.ok) {
      let reason = response.statusText;
      try { reason = (await response.json()).error || reason; } catch (e) { /* not JSON */ }
      throw new ApiError(response.status, `${response.status}: ${reason}`);
    }
    const blob = await response.blob();
    if (seq !== openSeq) return;
    const url = URL.createObjectURL(blob);
    const old = el.image.src;
    el.image.src = url;
    await el.image.decode();
    if (old && old.startsWith("blob:")) URL.revokeObjectURL(old);
    if (seq !== openSeq) return;
    state.width = el.image.naturalWidth;
    state.height = el.image.naturalHeight;
    for (const c of layers) {
      c.width = state.width;
      c.height = state.height;
    }
    imageDataCache.clear();
    fit();
    el.image.classList.add("shown");
  }
  async function embedPhoto(name, seq) {
    let s = await api("POST", `/api/images/${enc(name)}/embed`, {});
    while (s.state !== "ready" && s.state !== "failed" && seq === openSeq) {
      state.embed = s;
      setProgress(s.progress || 0);
      setStatus(`embedding ${name}: ${s.state} ${Math.round((s.progress || 0) * 100)}%` +
        (s.elapsed_s !== undefined ? ` (${Number(s.elapsed_s).toFixed(1)} s)` : ""));
      await sleep(100);
      s = await api("GET", `/api/images/${enc(name)}/embed`);
      // evicted from the server's cache meanwhile (or never asked for): ask again
      if (s.state === "none") s = await api("POST", `/api/images/${enc(name)}/embed`, {});
    }
    state.embed = s;
    return s;
  }
  function step(delta) {
    if (!photos.length) return;
    const i = Math.max(0, Math.min(photos.length - 1, state.index + delta));
    if (i !== state.index) openPhoto(i);
  }

  // ---------------------------------------------------------------- prompts and predictions
  function derivePrompts() {
    state.points = [];
    state.labels = [];
    state.box = null;
    for (const p of state.prompts) {
      if (p.type === "point") {
        state.points.push([p.x, p.y]);
        state.labels.push(p.label);
      } else {
        state.box = p.box;
      }
    }
  }
  function resetPrompts() {
    state.prompts = [];
    derivePrompts();
    state.promptVersion++;
    state.drawnVersion = state.promptVersion;
    state.prediction = null;
    state.candidate = 0;
    state.scores = [];
    state.areas = [];
    currentMasks = null;
    pendingClicks = [];
    markSettled();
    if (state.width) {
      drawCurrent();
      drawPrompts();
    }
  }
  function markSettled() {
    state.settled = !state.inFlight && !state.cycling && state.drawnVersion === state.promptVersion;
    if (state.settled) {
      const w = settleWaiters;
      settleWaiters = [];
      w.forEach((r) => r());
    }
  }
  function whenSettled() {
    return state.settled ? Promise.resolve() : new Promise((r) => settleWaiters.push(r));
  }
  function addPrompt(prompt, t0) {
    state.prompts.push(prompt);
    derivePrompts();
    state.promptVersion++;
    pendingClicks.push({ t0, version: state.promptVersion });
    drawPrompts();
    requestPredict();
  }
  function undo() {
    if (!state.prompts.length) return;
    state.prompts.pop();
    if (!state.prompts.length) {
      resetPrompts();
      setStatus("prompts cleared");
      return;
    }
    derivePrompts();
    state.promptVersion++;
    drawPrompts();
    requestPredict();
  }
  async function requestPredict() {
    state.settled = false;
    if (state.inFlight) return; // sent again with the latest prompts when the answer is in
    const version = state.promptVersion, seq = openSeq;
    // the best candidate's mask comes with the answer; the others' when Tab first shows them (a third of the work)
    const body = { image: state.image, multimask: true, format: "rle", candidates: "best" };
    if (state.points.length) {
      body.points = state.points;
      body.labels = state.labels;
    }
    if (state.box) body.box = state.box;
    state.inFlight = true;
    let answer = null;
    const tSend = performance.now();
    try {
      answer = await api("POST", "/api/predict", body);
    } catch (err) {
      if (!err.apiError) throw err;
    } finally {
      state.inFlight = false;
    }
    if (seq !== openSeq) return;
    if (answer && version === state.promptVersion && state.prompts.length) {
      currentMasks = answer;
      state.prediction = answer.prediction;
      state.candidate = answer.best;
      state.scores = answer.masks.map((m) => m.score);
      state.areas = answer.masks.map((m) => m.area);
      const tAnswer = performance.now();
      drawCurrent();
      state.drawnVersion = version;
      const now = performance.now();
      debug.breakdown.push({ request_ms: tAnswer - tSend, draw_ms: now - tAnswer, predict_ms: answer.predict_ms });
      pendingClicks = pendingClicks.filter((c) => {
        if (c.version > version) return true;
        debug.timings.push(now - c.t0);
        return false;
      });
      debug.predictMs.push(answer.predict_ms);
      const m = answer.masks[state.candidate];
      setStatus(`candidate ${state.candidate + 1}/${answer.masks.length}: score ${m.score.toFixed(3)}, ` +
        `${m.area} px (predict ${Number(answer.predict_ms).toFixed(0)} ms) \u2014 Enter accepts, Tab cycles`);
    } else if (!answer) {
      // the request failed (its reason is in the status line): the prompts stay, the mask drawn for earlier
      // prompts is taken away, and the next prompt (or an undo) predicts again from all of them
      pendingClicks = pendingClicks.filter((c) => c.version > version);
      currentMasks = null;
      state.prediction = null;
      state.scores = [];
      drawCurrent();
      if (state.promptVersion === version) state.drawnVersion = version;
    }
    if (state.promptVersion !== version && state.prompts.length) {
      requestPredict();
      return;
    }
    if (!state.prompts.length) state.drawnVersion = state.promptVersion;
    markSettled();
  }
  async function cycleCandidate() {
    if (!currentMasks || state.cycling) return;
    const answer = currentMasks, next = (state.candidate + 1) % answer.masks.length;
    if (!answer.masks[next].rle) {
      state.cycling = true; // Enter waits for the candidate to be shown (whenSettled)
      state.settled = false;
      try {
        answer.masks[next].rle = (await api("GET", `/api/predictions/${enc(answer.prediction)}/masks/${next}`)).rle;
      } catch (err) {
        if (!err.apiError) throw err; // the reason is in the status line; the candidate shown stays
      } finally {
        state.cycling = false;
      }
      if (currentMasks !== answer || !answer.masks[next].rle) {
        markSettled();
        return; // new prompts meanwhile, or the request failed
      }
    }
    state.candidate = next;
    drawCurrent();
    markSettled();
    const m = currentMasks.masks[state.candidate];
    setStatus(`candidate ${state.candidate + 1}/${currentMasks.masks.length}: score ${m.score.toFixed(3)}, ` +
      `${m.area} px`);
  }
  async function accept() {
    if (state.accepting) return;
    await whenSettled();
    if (!state.prediction || !currentMasks) return;
    const body = {
      image: state.image, prediction: state.prediction, index: state.candidate,
      category_id: Number(el.category.value),
    };
    const seq = openSeq;
    state.accepting = true;
    try {
      const a = await api("POST", "/api/annotations", body);
      if (seq !== openSeq) return;
      addAnnotation(a);
      resetPrompts();
      setStatus(`object #${a.id} (${categoryName(a.category_id)}, ${a.area} px) accepted`);
    } catch (err) {
      if (!err.apiError) throw err;
    } finally {
      state.accepting = false;
    }
  }
  function addAnnotation(a) {
    annotations.push(a);
    drawObjects();
    renderObjects();
    updatePhotoCount();
  }

  // ---------------------------------------------------------------- objects
  function selectObject(id) {
    state.selected = id;
    drawObjects();
    renderObjects();
  }
  async function deleteObject(id) {
    if (id === null || id === undefined) return;
    try {
      await api("DELETE", `/api/annotations/${id}`);
    } catch (err) {
      if (!err.apiError) throw err;
      return;
    }
    annotations = annotations.filter((a) => a.id !== id);
    runCache.delete(id);
    if (state.selected === id) state.selected = null;
    drawObjects();
    renderObjects();
    updatePhotoCount();
    setStatus(`object #${id} deleted`);
  }
  async function relabel(id, categoryId) {
    try {
      const a = await api("PATCH", `/api/annotations/${id}`, { category_id: categoryId });
      const i = annotations.findIndex((x) => x.id === id);
      if (i >= 0) annotations[i] = a;
      setStatus(`object #${id} is now ${categoryName(a.category_id)}`);
    } catch (err) {
      if (!err.apiError) throw err;
    }
    renderObjects();
  }
  async function addCategory() {
    const name = el.newCategory.value.trim();
    if (!name) return;
    try {
      const c = await api("POST", "/api/categories", { name });
      const data = await api("GET", "/api/categories");
      categories = data.categories;
      el.category.value = String(c.id);
      renderCategories();
      el.category.value = String(c.id);
      renderObjects();
      el.newCategory.value = "";
      el.newCategory.blur();
      setStatus(`category ${c.name} (${c.id})`);
    } catch (err) {
      if (!err.apiError) throw err;
    }
  }
  async function toggleDone() {
    const p = photos[state.index];
    if (!p) return;
    try {
      await api("POST", `/api/images/${enc(p.name)}/done`, { done: !p.done });
      p.done = !p.done;
      renderPhotos();
      setStatus(`${p.name} marked ${p.done ? "done" : "not done"}`);
    } catch (err) {
      if (!err.apiError) throw err;
    }
  }

  // ---------------------------------------------------------------- segment everything
  async function generate() {
    if (!state.ready || state.jobState === "running") return;
    const name = state.image, seq = openSeq;
    const pps = Math.max(1, Math.round(Number(el.pps.value) || 32));
    let job;
    try {
      job = await api("POST", `/api/images/${enc(name)}/generate`, { ...debug.generateOptions, points_per_side: pps });
    } catch (err) {
      if (!err.apiError) throw err;
      return;
    }
    state.job = job.job;
    state.jobState = "running";
    setProgress(0);
    setStatus(`segmenting everything on ${name}\u2026`);
    let s;
    for (;;) {
      try {
        s = await api("GET", `/api/jobs/${enc(job.job)}`);
      } catch (err) {
        if (!err.apiError) throw err;
        state.jobState = "failed";
        setProgress(null);
        return;
      }
      if (seq !== openSeq) return;
      if (s.state !== "running") break;
      const frac = s.total ? s.done / s.total : 0;
      setProgress(frac);
      setStatus(`segmenting everything on ${name}: batch ${s.done}/${s.total || "?"}`);
      await sleep(200);
    }
    setProgress(null);
    state.jobState = s.state;
    if (s.state !== "done") {
      showError(`segment everything failed: ${s.error || s.state}`);
      return;
    }
    proposals = s.proposals || [];
    state.proposals = proposals.length;
    if (!proposals.length) {
      setStatus("segment everything: no proposals");
      return;
    }
    state.proposalIndex = 0;
    showProposal();
  }
  function showProposal() {
    if (state.proposalIndex < 0 || state.proposalIndex >= proposals.length) {
      stopReview();
      setStatus("proposals reviewed");
      return;
    }
    const p = proposals[state.proposalIndex];
    el.review.hidden = false;
    el.reviewText.textContent = `proposal ${state.proposalIndex + 1}/${proposals.length}: ` +
      `score ${Number(p.score).toFixed(2)}, ${p.area} px`;
    drawProposal();
    setStatus(`proposal ${state.proposalIndex + 1}/${proposals.length} \u2014 a: accept, r: reject`);
  }
  let acceptsQueued = 0; // "a" pressed while an accept is on its way: each accepts the proposal after it
  function stopReview() {
    state.proposalIndex = -1;
    acceptsQueued = 0;
    el.review.hidden = true;
    if (state.width) drawProposal();
  }
  async function acceptProposal(all) {
    if (state.proposalIndex < 0) return;
    if (state.accepting) {
      if (!all) acceptsQueued++;
      return;
    }
    const seq = openSeq;
    state.accepting = true;
    try {
      do {
        const p = proposals[state.proposalIndex];
        const a = await api("POST", "/api/annotations", {
          image: state.image, proposal: p.proposal, category_id: Number(el.category.value),
        });
        if (seq !== openSeq) return;
        addAnnotation(a);
        state.proposalIndex++;
        if (all && state.proposalIndex < proposals.length) {
          el.reviewText.textContent = `accepting ${state.proposalIndex + 1}/${proposals.length}\u2026`;
        }
      } while (all && state.proposalIndex < proposals.length);
    } catch (err) {
      if (!err.apiError) throw err;
    } finally {
      state.accepting = false;
    }
    showProposal();
    if (acceptsQueued > 0 && seq === openSeq && state.proposalIndex >= 0) {
      acceptsQueued--;
      acceptProposal(false);
    } else acceptsQueued = 0;
  }
  function rejectProposal() {
    if (state.proposalIndex < 0) return;
    state.proposalIndex++;
    showProposal();
  }

  // ---------------------------------------------------------------- mouse
  let drag = null; // {kind: "prompt" | "pan", x, y, t0, shift, button, moved}
  let spaceDown = false;
  function imagePoint(clientX, clientY) {
    const r = el.image.getBoundingClientRect();
    return [(clientX - r.left) * el.image.naturalWidth / r.width, (clientY - r.top) * el.image.naturalHeight / r.height];
  }
  function inside([x, y]) {
    return x >= 0 && y >= 0 && x < state.width && y < state.height;
  }
  const clamp = (v, lo, hi) => Math.max(lo, Math.min(hi, v));
  el.viewport.addEventListener("contextmenu", (e) => e.preventDefault());
  el.image.addEventListener("dragstart", (e) => e.preventDefault());
  el.viewport.addEventListener("mousedown", (e) => {
    const t0 = performance.now();
    if (e.button === 1 || (e.button === 0 && spaceDown)) {
      drag = { kind: "pan", x: e.clientX, y: e.clientY };
      el.viewport.classList.add("panning");
      e.preventDefault();
      return;
    }
    if (e.target !== el.image || (e.button !== 0 && e.button !== 2)) return;
    e.preventDefault();
    drag = { kind: "prompt", x: e.clientX, y: e.clientY, t0, shift: e.shiftKey, button: e.button, moved: false };
  });
  window.addEventListener("mousemove", (e) => {
    if (!drag) return;
    if (drag.kind === "pan") {
      pan(e.clientX - drag.x, e.clientY - drag.y);
      drag.x = e.clientX;
      drag.y = e.clientY;
      return;
    }
    if (drag.button !== 0) return;
    if (!drag.moved && Math.hypot(e.clientX - drag.x, e.clientY - drag.y) > DRAG_PX) drag.moved = true;
    if (drag.moved) drawPrompts(dragBox(drag, e));
  });
  function dragBox(d, e) {
    const [ax, ay] = imagePoint(d.x, d.y), [bx, by] = imagePoint(e.clientX, e.clientY);
    const W = state.width, H = state.height;
    return [clamp(Math.min(ax, bx), 0, W), clamp(Math.min(ay, by), 0, H),
      clamp(Math.max(ax, bx), 0, W), clamp(Math.max(ay, by), 0, H)];
  }
  window.addEventListener("mouseup", (e) => {
    const d = drag;
    drag = null;
    el.viewport.classList.remove("panning");
    if (!d || d.kind !== "prompt") return;
    if (!state.ready) {
      setStatus(`${state.image || "the photo"} is not embedded yet`);
      drawPrompts();
      return;
    }
    const t0 = d.t0;
    if (d.button === 0 && d.moved) {
      const box = dragBox(d, e);
      if (box[2] - box[0] < 1 || box[3] - box[1] < 1) { drawPrompts(); return; }
      addPrompt({ type: "box", box }, t0);
      return;
    }
    const pt = imagePoint(d.x, d.y);
    if (!inside(pt)) return;
    const label = d.button === 2 || d.shift ? 0 : 1;
    addPrompt({ type: "point", x: pt[0], y: pt[1], label }, t0);
  });
  el.viewport.addEventListener("wheel", (e) => {
    e.preventDefault();
    const r = el.viewport.getBoundingClientRect();
    zoomAt(Math.pow(1.0015, -e.deltaY), e.clientX - r.left, e.clientY - r.top);
  }, { passive: false });

  // ---------------------------------------------------------------- keys
  document.addEventListener("keydown", (e) => {
    const t = e.target;
    const typing = t && (t.tagName === "INPUT" || t.tagName === "SELECT" || t.tagName === "TEXTAREA");
    if (typing) {
      if (t === el.newCategory && e.key === "Enter") { e.preventDefault(); addCategory(); }
      if (e.key === "Escape") t.blur();
      return;
    }
    const k = e.key;
    let handled = true;
    if (k === " ") {
      spaceDown = true;
      el.viewport.classList.add("space");
    } else if (k === "Tab") cycleCandidate();
    else if (k === "Enter") accept();
    else if (k === "Backspace" || ((e.ctrlKey || e.metaKey) && (k === "z" || k === "Z"))) undo();
    else if (k === "Delete") deleteObject(state.selected);
    else if (k === "Escape") {
      if (state.proposalIndex >= 0) stopReview();
      resetPrompts();
      setStatus("prompts cleared");
    } else if (e.ctrlKey || e.metaKey || e.altKey) handled = false;
    else if (k === "n") step(1);
    else if (k === "p") step(-1);
    else if (k === "+" || k === "=") zoomCentre(1.25);
    else if (k === "-" || k === "_") zoomCentre(1 / 1.25);
    else if (k === "0" || k === "f") fit();
    else if (k === "ArrowLeft") pan(60, 0);
    else if (k === "ArrowRight") pan(-60, 0);
    else if (k === "ArrowUp") pan(0, 60);
    else if (k === "ArrowDown") pan(0, -60);
    else if (k === "a") acceptProposal(false);
    else if (k === "A") acceptProposal(true);
    else if (k === "r") rejectProposal();
    else handled = false;
    if (handled) e.preventDefault();
  });
  document.addEventListener("keyup", (e) => {
    if (e.key === " ") {
      spaceDown = false;
      el.viewport.classList.remove("space");
    }
  });

  // ---------------------------------------------------------------- buttons
  function button(id, fn) {
    const b = $(id);
    b.addEventListener("mousedown", (e) => e.preventDefault()); // keep the focus off buttons (keys stay ours)
    b.addEventListener("click", fn);
  }
  button("btn-prev", () => step(-1));
  button("btn-next", () => step(1));
  button("btn-fit", fit);
  button("btn-zoom-in", () => zoomCentre(1.25));
  button("btn-zoom-out", () => zoomCentre(1 / 1.25));
  button("btn-undo", undo);
  button("btn-clear", () => { resetPrompts(); setStatus("prompts cleared"); });
  button("btn-cycle", cycleCandidate);
  button("btn-accept", accept);
  button("btn-generate", generate);
  button("btn-done", toggleDone);
  button("btn-add-category", addCategory);
  button("btn-proposal-accept", () => acceptProposal(false));
  button("btn-proposal-reject", rejectProposal);
  button("btn-proposal-all", () => acceptProposal(true));
  button("btn-proposal-stop", stopReview);
  el.category.addEventListener("change", () => el.category.blur());

  // ---------------------------------------------------------------- start
  debug.open = (name) => {
    const i = photos.findIndex((p) => p.name === name);
    if (i >= 0) openPhoto(i);
    return i;
  };
  async function start() {
    try {
      const info = await api("GET", "/api/info");
      categories = info.categories || [];
      renderCategories();
      await refreshPhotos();
      document.title = `sam2-jax annotate \u2014 ${info.out || ""}`;
      if (!photos.length) {
        setStatus("no photos");
        return;
      }
      const want = new URLSearchParams(location.search).get("image");
      const i = want ? Math.max(0, photos.findIndex((p) => p.name === want)) : 0;
      await openPhoto(i);
    } catch (err) {
      if (!err.apiError) showError(`cannot start: ${err.message}`);
    }
  }
  start();
})();
