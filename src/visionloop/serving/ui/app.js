// visionloop's page: one ES module, no dependencies, no build step.
//
// The page asks the server once per image at a low confidence floor and filters by the slider
// itself: greedy NMS decides a box only by boxes of higher confidence, so "asked at 0.01, kept
// above t" is exactly the API's answer at t (both keep confidence > t). The IoU slider changes
// NMS, so it asks again (debounced). Every prediction goes through one queue: at most one
// request is in flight and a newer image replaces a waiting one, so live camera mode never piles up.

const FLOOR = 0.01; // the confidence the page asks at (lower if the slider is lower)
const LIVE_INTERVAL_MS = 250; // live camera: about 4 frames a second at most
const DEBOUNCE_MS = 200;
const PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324",
  "#469990", "#800000", "#808000", "#000075", "#bfef45", "#fabed4", "#dcbeff", "#ffd8b1"];
const FRIENDLY = {
  400: "The server could not use this image", 401: "A token is needed", 404: "Not found",
  413: "The image is too large for this server", 415: "The server cannot read this kind of file",
  422: "The request was refused", 429: "Too many requests; wait a little",
  503: "The server is busy or still loading; try again in a moment",
};

const $ = (id) => document.getElementById(id);
const state = {
  models: [], // /v1/models entries
  image: null, // {blob, name, bitmap: Promise<ImageBitmap|null>}
  answer: null, // {pred, conf, iou, network, bitmap}
  stream: null,
  live: false,
  answers: 0, // answers drawn so far
};

class ApiFailure extends Error {
  constructor(message, status) { super(message); this.status = status; }
}

// -- talking to the API -----------------------------------------------------------------------
async function call(path, options = {}) {
  let resp;
  try {
    resp = await fetch(path, options);
  } catch (err) {
    throw new ApiFailure(`Cannot reach the server: ${err.message}`, 0);
  }
  if (!resp.ok) {
    let code = "", message = resp.statusText;
    try {
      const body = await resp.json();
      code = body.error.code;
      message = body.error.message;
    } catch { /* not our JSON error: keep the status text */ }
    const lead = FRIENDLY[resp.status] || "The server refused the request";
    throw new ApiFailure(`${lead} (HTTP ${resp.status}${code ? ", " + code : ""}): ${message}`, resp.status);
  }
  return resp.json();
}

function showMessage(text) {
  const box = $("message");
  box.textContent = text || "";
  box.hidden = !text;
}

const currentModel = () => state.models.find((m) => m.name === $("model").value);
const sliderConf = () => Number($("conf").value);
const askConf = () => Math.min(sliderConf(), FLOOR);
const colour = (classId) => PALETTE[classId % PALETTE.length];
const ver = (v) => (/^\d+$/.test(v) ? `v${v}` : v); // registry versions are numbers; files are file:HASH
const fmtConf = (c) => (c < 0.1 ? c.toFixed(3) : c.toFixed(2));

// what the page draws: the API's answer at the slider's threshold
function visible(pred) {
  const conf = sliderConf();
  return (pred.detections || []).filter((d) => d.confidence > conf);
}

function debounce(fn, ms) {
  let timer = 0;
  return (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); };
}

// -- models and status ------------------------------------------------------------------------
function modelLabel(m) {
  const parts = [m.name];
  if (m.version) parts.push(ver(m.version));
  if (m.alias) parts.push(`@${m.alias}`);
  if (m.task) parts.push(m.task);
  if (m.state !== "ready") parts.push(`(${m.state})`);
  return parts.join(" · ");
}

function fillSelect(select, models, chosen) {
  select.replaceChildren(...models.map((m) => {
    const opt = new Option(modelLabel(m), m.name);
    opt.selected = m.name === chosen;
    return opt;
  }));
}

async function loadModels() {
  let doc;
  try {
    doc = await call("/v1/models");
  } catch (err) {
    showMessage(err.message);
    return;
  }
  const before = $("model").value;
  state.models = doc.models;
  const chosen = state.models.some((m) => m.name === before) ? before : doc.default;
  fillSelect($("model"), state.models, chosen);
  const other = state.models.find((m) => m.name !== chosen);
  fillSelect($("compare-a"), state.models, $("compare-a").value || chosen);
  fillSelect($("compare-b"), state.models, $("compare-b").value || (other ? other.name : chosen));
  describeModel();
  renderStatus();
  if (state.models.some((m) => m.state === "loading")) setTimeout(loadModels, 2000);
}

function describeModel() {
  const m = currentModel();
  $("model-info").textContent = m ? `${m.classes.length} classes: ${m.classes.join(", ")}` : "no model";
  $("flag-class").replaceChildren(new Option("—", ""), ...(m ? m.classes : []).map((c) => new Option(c, c)));
}

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text ?? "–";
  if (cls) td.className = cls;
  return td;
}

function renderStatus() {
  const rows = state.models.map((m) => {
    const tr = document.createElement("tr");
    tr.dataset.model = m.name;
    tr.append(cell(m.name + (m.default ? " (default)" : "")), cell(m.version), cell(m.alias), cell(m.task),
      cell(m.state + (m.pinned ? ", pinned" : "")), cell(m.loaded_at),
      cell(m.last_error ? `${m.last_error} (${m.last_error_at})` : "", m.last_error ? "error" : ""));
    return tr;
  });
  $("status").tBodies[0].replaceChildren(...rows);
}

async function reload(event) {
  event.preventDefault();
  const m = currentModel();
  const token = $("admin-token").value; // read from the field: never stored anywhere else
  if (!m) return;
  $("reload-result").textContent = `reloading ${m.name}…`;
  try {
    const res = await call(`/v1/models/${encodeURIComponent(m.name)}/reload`, {
      method: "POST", headers: token ? { Authorization: `Bearer ${token}` } : {},
    });
    $("reload-result").textContent = res.swapped
      ? `${res.name}: ${res.previous_version} → ${res.version} (swapped)`
      : `${res.name}: ${res.version} is already serving`;
  } catch (err) {
    $("reload-result").textContent = err.message;
  }
  await loadModels();
}

// -- the prediction queue ---------------------------------------------------------------------
let inflight = null; // the promise draining the queue, while one runs
let nextJob = null; // the newest waiting job; a newer one replaces it

function predict(job) {
  nextJob = job;
  if (!inflight) inflight = drain().finally(() => { inflight = null; });
  return inflight;
}

async function drain() {
  while (nextJob) {
    const job = nextJob;
    nextJob = null;
    await predictNow(job);
  }
}

async function predictNow(job) {
  const m = currentModel();
  if (!m) { showMessage("The server serves no model."); return; }
  const conf = askConf(), iou = Number($("iou").value);
  const form = new FormData();
  form.append("file", job.blob, job.name);
  const started = performance.now();
  let pred;
  try {
    pred = await call(`/v1/models/${encodeURIComponent(m.name)}/predict?conf=${conf}&iou=${iou}&top_k=5`,
      { method: "POST", body: form });
  } catch (err) {
    showMessage(err.message);
    return;
  }
  const network = performance.now() - started - pred.timing_ms.total;
  const bitmap = await job.bitmap;
  performance.mark("vl-answer");
  state.answer = { pred, conf, iou, network, bitmap, blob: job.blob, seq: ++state.answers };
  showMessage("");
  render();
  performance.mark("vl-drawn");
  performance.measure("vl-answer-to-drawn", "vl-answer", "vl-drawn");
}

function setImage(blob, name) {
  state.image = { blob, name, bitmap: createImageBitmap(blob).catch(() => null) };
  $("compare-run").disabled = false;
  return predict(state.image);
}

const reask = debounce(() => { if (state.image) predict(state.image); }, DEBOUNCE_MS);

// -- drawing ----------------------------------------------------------------------------------
// The canvas is sized to where it is shown (at the screen's pixel ratio) and boxes are scaled
// onto it, so labels stay crisp and the same size whether the image is 128 or 4000 pixels wide.
function drawBoxes(canvas, bitmap, pred, dets, maxHeight) {
  const { width: iw, height: ih } = pred.image;
  const shown = Math.max(1, Math.min(canvas.parentElement.clientWidth, (maxHeight * iw) / ih));
  const dpr = window.devicePixelRatio || 1;
  canvas.style.width = `${shown}px`;
  canvas.width = Math.round(shown * dpr);
  canvas.height = Math.round(((shown * ih) / iw) * dpr);
  const k = canvas.width / iw;
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (bitmap) ctx.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  const font = Math.round(13 * dpr);
  ctx.font = `${font}px system-ui, sans-serif`;
  ctx.textBaseline = "top";
  ctx.lineWidth = 2 * dpr;
  for (const d of dets) {
    const x1 = d.box.x1 * k, y1 = d.box.y1 * k, x2 = d.box.x2 * k, y2 = d.box.y2 * k;
    ctx.strokeStyle = ctx.fillStyle = colour(d.class_id);
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    const label = `${d.class_name} ${fmtConf(d.confidence)}`;
    const w = ctx.measureText(label).width + 6 * dpr;
    const top = y1 - font - 4 * dpr < 0 ? y1 : y1 - font - 4 * dpr;
    ctx.fillRect(x1, top, w, font + 4 * dpr);
    ctx.fillStyle = "#fff";
    ctx.fillText(label, x1 + 3 * dpr, top + 2 * dpr);
  }
}

function swatch(classId) {
  const s = document.createElement("span");
  s.className = "swatch";
  s.style.background = colour(classId); // CSSOM, allowed by the CSP (inline style attributes are not)
  return s;
}

function renderDetections(dets) {
  $("detections").replaceChildren(...dets.map((d) => {
    const li = document.createElement("li");
    li.dataset.class = d.class_name;
    li.dataset.conf = String(d.confidence);
    const { x1, y1, x2, y2 } = d.box;
    li.append(swatch(d.class_id), `${d.class_name} ${fmtConf(d.confidence)} at (${Math.round(x1)}, ${Math.round(y1)})–` +
      `(${Math.round(x2)}, ${Math.round(y2)})`);
    return li;
  }));
}

function renderTopK(classes) {
  $("topk").replaceChildren(...(classes || []).map((c) => {
    const row = document.createElement("div");
    row.className = "bar-row";
    row.dataset.class = c.class_name;
    row.dataset.conf = String(c.confidence);
    const name = document.createElement("span");
    name.append(swatch(c.class_id), c.class_name);
    const track = document.createElement("div");
    track.className = "track";
    track.setAttribute("role", "meter");
    track.setAttribute("aria-valuemin", "0");
    track.setAttribute("aria-valuemax", "1");
    track.setAttribute("aria-valuenow", String(c.confidence));
    track.setAttribute("aria-label", c.class_name);
    const fill = document.createElement("div");
    fill.className = "fill";
    fill.style.width = `${(100 * c.confidence).toFixed(1)}%`;
    track.append(fill);
    const pct = document.createElement("span");
    pct.textContent = `${(100 * c.confidence).toFixed(1)}%`;
    row.append(name, track, pct);
    return row;
  }));
}

function renderTiming(pred, network) {
  for (const td of $("timing").querySelectorAll("td[data-k]")) {
    const v = td.dataset.k === "network" ? network : pred.timing_ms[td.dataset.k];
    td.textContent = `${Math.max(0, v).toFixed(1)} ms`;
  }
}

function render() {
  const a = state.answer;
  if (!a) return;
  const { pred } = a;
  const dets = visible(pred);
  drawBoxes($("canvas"), a.bitmap, pred, dets, 0.7 * window.innerHeight);
  renderDetections(dets);
  renderTopK(pred.classes);
  const what = pred.task === "classify"
    ? `top class: ${pred.classes.length ? pred.classes[0].class_name : "none"}`
    : `${dets.length} detection${dets.length === 1 ? "" : "s"} with confidence above ${sliderConf()}`;
  const summary = $("summary");
  summary.textContent = `${pred.model} ${ver(pred.version)}: ${what}`;
  // what the tests (and anyone scripting the page) can read: which answer is drawn, at what threshold
  Object.assign(summary.dataset, {
    model: pred.model, asked: String(a.conf), iou: String(a.iou), shown: String(sliderConf()), seq: String(a.seq),
    count: String(pred.task === "classify" ? pred.classes.length : dets.length),
  });
  renderTiming(pred, a.network);
  $("json").textContent = `// POST /v1/models/${pred.model}/predict?conf=${a.conf}&iou=${a.iou} ` +
    `(the page shows confidence > ${sliderConf()})\n${JSON.stringify(pred, null, 2)}`;
  $("flag-send").disabled = false;
}

// -- flag a mistake ---------------------------------------------------------------------------
function base64Of(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1]);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

async function flag(event) {
  event.preventDefault();
  const a = state.answer;
  if (!a) return;
  const kind = new FormData($("flag-form")).get("kind");
  const corrected = $("flag-class").value;
  const note = [`[${kind}]`, corrected && `correct class: ${corrected}`, $("flag-note").value.trim()]
    .filter(Boolean).join(" ");
  const body = { model: a.pred.model, version: a.pred.version, image: await base64Of(a.blob), note };
  if (a.pred.task === "detect") body.detections = visible(a.pred);
  const token = $("feedback-token").value;
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  const out = $("flag-result");
  out.textContent = "sending…";
  try {
    const res = await call("/v1/feedback", { method: "POST", headers, body: JSON.stringify(body) });
    out.textContent = `Thanks: capture ${res.id} is in the inbox of ${res.model} (${ver(res.version)}).`;
    out.className = "good";
    out.dataset.id = res.id;
    $("flag-note").value = "";
  } catch (err) {
    if (err.status === 401) $("feedback-token-row").hidden = false;
    out.textContent = err.message;
    out.className = "bad";
  }
}

// -- compare ----------------------------------------------------------------------------------
async function compare() {
  if (!state.image) return;
  const names = [$("compare-a").value, $("compare-b").value];
  const form = new FormData();
  form.append("file", state.image.blob, state.image.name);
  const query = `models=${names.map(encodeURIComponent).join(",")}&conf=${askConf()}&iou=${$("iou").value}&top_k=5`;
  let doc;
  try {
    doc = await call(`/v1/compare?${query}`, { method: "POST", body: form });
  } catch (err) {
    showMessage(err.message);
    return;
  }
  showMessage("");
  const bitmap = await state.image.bitmap;
  const byName = Object.fromEntries(doc.results.map((r) => [r.model, r]));
  ["a", "b"].forEach((side, i) => {
    const fig = $("compare").querySelector(`figure[data-side="${side}"]`);
    const res = byName[names[i]];
    const caption = fig.querySelector("figcaption");
    if (!res || res.error) {
      caption.textContent = `${names[i]}: ${res ? res.error.message : "no answer"}`;
      fig.dataset.count = "";
      return;
    }
    const pred = res.prediction;
    const dets = visible(pred);
    drawBoxes(fig.querySelector("canvas"), bitmap, pred, dets, 0.5 * window.innerHeight);
    const what = pred.task === "classify"
      ? pred.classes.slice(0, 3).map((c) => `${c.class_name} ${(100 * c.confidence).toFixed(1)}%`).join(", ")
      : `${dets.length} detection${dets.length === 1 ? "" : "s"}`;
    caption.textContent = `${pred.model} ${ver(pred.version)}: ${what}, inference ${pred.timing_ms.inference.toFixed(1)} ms`;
    fig.dataset.count = String(pred.task === "classify" ? pred.classes.length : dets.length);
    fig.dataset.model = pred.model;
  });
}

// -- camera -----------------------------------------------------------------------------------
async function startCamera() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    showMessage("This browser offers no camera to this page (it needs https or localhost).");
    return;
  }
  try {
    state.stream = await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 1280 } }, audio: false });
  } catch (err) {
    showMessage(`No camera: ${err.message}`);
    return;
  }
  const video = $("video");
  video.srcObject = state.stream;
  video.hidden = false;
  await video.play();
  for (const id of ["cam-snap", "cam-live", "cam-stop"]) $(id).disabled = false;
  $("cam-start").disabled = true;
}

function stopCamera() {
  setLive(false);
  if (state.stream) state.stream.getTracks().forEach((t) => t.stop());
  state.stream = null;
  $("video").hidden = true;
  for (const id of ["cam-snap", "cam-live", "cam-stop"]) $(id).disabled = true;
  $("cam-start").disabled = false;
}

function frame() {
  const video = $("video");
  const c = document.createElement("canvas");
  c.width = video.videoWidth;
  c.height = video.videoHeight;
  c.getContext("2d").drawImage(video, 0, 0);
  return new Promise((resolve) => c.toBlob(resolve, "image/jpeg", 0.85));
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function setLive(on) {
  state.live = on;
  $("cam-live").setAttribute("aria-pressed", String(on));
  if (on) liveLoop();
}

async function liveLoop() {
  while (state.live) {
    const started = performance.now();
    const blob = await frame();
    if (blob) await setImage(blob, "frame.jpg"); // waits for the answer: one request in flight
    await sleep(Math.max(0, LIVE_INTERVAL_MS - (performance.now() - started)));
  }
}

// -- inputs -----------------------------------------------------------------------------------
function takeFile(file) {
  if (!file) return;
  if (file.type && !file.type.startsWith("image/")) {
    showMessage(`${file.name} is not an image (${file.type}).`);
    return;
  }
  setImage(file, file.name || "pasted-image");
}

async function example(src) {
  try {
    const resp = await fetch(src);
    takeFile(new File([await resp.blob()], src.split("/").pop(), { type: "image/jpeg" }));
  } catch (err) {
    showMessage(`Cannot load the example: ${err.message}`);
  }
}

function wire() {
  $("file").addEventListener("change", (e) => takeFile(e.target.files[0]));
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    takeFile(e.dataTransfer.files[0]);
  });
  document.addEventListener("paste", (e) => {
    const file = [...(e.clipboardData ? e.clipboardData.files : [])].find((f) => f.type.startsWith("image/"));
    if (file) takeFile(file);
  });
  for (const b of document.querySelectorAll(".example")) b.addEventListener("click", () => example(b.dataset.src));
  $("conf").addEventListener("input", () => {
    $("conf-out").textContent = sliderConf().toFixed(3);
    if (state.answer && sliderConf() < state.answer.conf) reask(); // below what was asked: ask again
    render();
  });
  $("iou").addEventListener("input", () => {
    $("iou-out").textContent = Number($("iou").value).toFixed(2);
    reask();
  });
  $("model").addEventListener("change", () => {
    describeModel();
    if (state.image) predict(state.image);
  });
  $("copy-json").addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText($("json").textContent);
      $("copy-json").textContent = "Copied";
    } catch {
      getSelection().selectAllChildren($("json")); // no clipboard permission: select it for Ctrl+C
    }
  });
  $("flag-form").addEventListener("submit", flag);
  $("compare-run").addEventListener("click", compare);
  $("reload-form").addEventListener("submit", reload);
  $("refresh").addEventListener("click", loadModels);
  $("cam-start").addEventListener("click", startCamera);
  $("cam-stop").addEventListener("click", stopCamera);
  $("cam-snap").addEventListener("click", async () => { const b = await frame(); if (b) setImage(b, "camera.jpg"); });
  $("cam-live").addEventListener("click", () => setLive(!state.live));
  window.addEventListener("resize", debounce(render, DEBOUNCE_MS));
}

wire();
loadModels();
