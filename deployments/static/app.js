// The click-to-cut page: upload once (POST /v1/images), then every click asks /v1/cutout for the mask of
// all clicks so far by image_id (the embedding is cached server-side, so a click costs only the mask decoder).
// Plain JS, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const TINT = [30, 144, 255]; // overlay colour of the kept object
// The API key, when the service has keys: this tab's session storage only (gone when the tab closes, never shared
// with other tabs or written to disk as localStorage would be).
const KEY_STORAGE = "bgremove.apiKey";
const OVERLAY_OPACITY = 0.55;
const ALPHA_PER_LOGIT = 32; // the edge's ramp, as deployments/edges.py

const state = {
  imageId: null, width: 0, height: 0, name: "photo",
  points: [], labels: [], // in pixels of the (EXIF-oriented) photo; 1 keep, 0 exclude
  mode: 1, view: "mask",
  mask: null, // the newest mask (ImageBitmap, grey): a preview, SAM's 256x256 grid over the whole photo
  maskScale: 0, // the preview's grey levels per logit (X-Preview-Scale, always sent with a preview)
  request: 0, // newest mask request; older answers are dropped
  controller: null,
};

// -- errors and status ---------------------------------------------------------------------------------------

async function errorMessage(response) {
  // The service answers every refusal with {"error": {"code", "message"}}; show its message as it is.
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) return body.error.message;
  } catch (_) { /* not JSON */ }
  return `the server answered ${response.status} ${response.statusText}`;
}

function showError(text) {
  const alert = $("alert");
  alert.textContent = text;
  alert.hidden = false;
}

function clearError() {
  $("alert").hidden = true;
  $("alert").textContent = "";
}

function setStatus(text) { $("status").textContent = text; }

function setBusy(on) { $("busy").hidden = !on; }

function apiKey() { return sessionStorage.getItem(KEY_STORAGE) || ""; }

function saveKey() {
  const key = $("api-key").value.trim();
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  else sessionStorage.removeItem(KEY_STORAGE);
}

function askForKey() {
  $("key-panel").open = true;
  $("api-key").focus();
}

async function post(path, form, signal) {
  // Relative paths: under a route prefix the API is there too.
  const headers = {};
  const key = apiKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  let response;
  try {
    response = await fetch(path, { method: "POST", body: form, signal, headers });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new Error("cannot reach the service; check that it is running and try again");
  }
  if (response.status === 401) askForKey();
  if (!response.ok) throw new Error(await errorMessage(response));
  return response;
}

// -- upload --------------------------------------------------------------------------------------------------

async function upload(file) {
  if (!file) return;
  clearError();
  if (file.type && !file.type.startsWith("image/")) {
    showError(`${file.name} is not an image; choose a JPEG, PNG or WebP photo`);
    return;
  }
  resetClicks();
  state.imageId = null;
  state.name = file.name.replace(/\.[^.]+$/, "") || "photo";
  const photo = $("photo");
  if (photo.src) URL.revokeObjectURL(photo.src);
  photo.src = URL.createObjectURL(file);
  $("drop").hidden = true;
  $("editor").hidden = false;
  document.body.classList.add("editing");
  setBusy(true);
  setStatus("Uploading and preparing the photo…");
  const form = new FormData();
  form.append("image", file);
  try {
    const info = await (await post("v1/images", form)).json();
    Object.assign(state, { imageId: info.image_id, width: info.width, height: info.height });
    setStatus(`${info.width} × ${info.height} · click the object you want to keep`);
    $("stage").dataset.imageId = info.image_id;
  } catch (err) {
    showError(err.message);
    setStatus("");
    backToDrop();
  } finally {
    setBusy(false);
  }
}

function backToDrop() {
  $("editor").hidden = true;
  $("drop").hidden = false;
  document.body.classList.remove("editing");
  $("file").value = "";
}

// -- clicks --------------------------------------------------------------------------------------------------

function photoPoint(event) {
  // Display pixels to photo pixels; the server's width/height are those of the EXIF-oriented photo, which is
  // also how the browser shows it.
  const rect = $("photo").getBoundingClientRect();
  const x = ((event.clientX - rect.left) / rect.width) * state.width;
  const y = ((event.clientY - rect.top) / rect.height) * state.height;
  return [Math.min(state.width - 1, Math.max(0, Math.round(x))), Math.min(state.height - 1, Math.max(0, Math.round(y)))];
}

function addPoint(event, label) {
  if (!state.imageId) return;
  event.preventDefault();
  state.points.push(photoPoint(event));
  state.labels.push(label);
  if (state.view === "before") setView("mask");
  update();
}

function undo() {
  if (!state.points.length) return;
  state.points.pop();
  state.labels.pop();
  update();
}

function resetClicks() {
  state.points = [];
  state.labels = [];
  state.mask = null;
  state.request += 1; // drop any answer still on its way
  if (state.controller) state.controller.abort();
  drawMarkers();
  drawOverlay();
  updateButtons();
}

function reset() {
  clearError();
  resetClicks();
  setStatus(state.imageId ? "Clicks cleared · click the object you want to keep" : "");
}

function updateButtons() {
  const any = state.points.length > 0;
  $("undo").disabled = !any;
  $("reset").disabled = !any;
  $("download").disabled = !any;
}

function cutoutForm(extra) {
  const form = new FormData();
  form.append("image_id", state.imageId);
  form.append("points", JSON.stringify(state.points));
  form.append("labels", JSON.stringify(state.labels));
  for (const [key, value] of Object.entries(extra)) form.append(key, value);
  return form;
}

async function update() {
  drawMarkers();
  updateButtons();
  clearError();
  if (!state.points.length) {
    state.request += 1;
    state.mask = null;
    drawOverlay();
    setStatus("Click the object you want to keep");
    return;
  }
  if (state.controller) state.controller.abort(); // only the newest clicks matter
  const controller = new AbortController();
  state.controller = controller;
  const request = ++state.request;
  setBusy(true);
  const started = performance.now();
  try {
    // The preview (SAM's 256x256 mask, answered without the postprocess stage) is all the overlay needs:
    // previewAlpha upsamples it over the photo the way the server makes its full-size mask.
    const response = await post("v1/cutout", cutoutForm({ preview: "true" }), controller.signal);
    const blob = await response.blob();
    if (request !== state.request) return;
    const bitmap = await createImageBitmap(blob);
    if (request !== state.request) return;
    state.mask = bitmap;
    state.maskScale = Number(response.headers.get("X-Preview-Scale")) || 0;
    drawOverlay();
    const ms = Math.round(performance.now() - started);
    const score = Number(response.headers.get("X-Mask-Score"));
    const n = state.points.length;
    setStatus(`${n} click${n > 1 ? "s" : ""} · mask score ${score.toFixed(2)} · ${ms} ms`);
  } catch (err) {
    if (err.name === "AbortError") return;
    if (request !== state.request) return;
    showError(err.message);
    setStatus("");
  } finally {
    if (request === state.request) setBusy(false);
  }
}

// -- drawing -------------------------------------------------------------------------------------------------

function displaySize() {
  const rect = $("photo").getBoundingClientRect();
  const ratio = Math.min(window.devicePixelRatio || 1, 2);
  // Draw at the shown size (not the photo's): a 24-megapixel photo would make every click slow to paint.
  return [Math.max(1, Math.round(rect.width * ratio)), Math.max(1, Math.round(rect.height * ratio))];
}

function canvasOf(w, h) {
  const canvas = document.createElement("canvas");
  canvas.width = w;
  canvas.height = h;
  return [canvas, canvas.getContext("2d", { willReadFrequently: true })];
}

function bilinearTaps(size, gridSize) {
  // torch's bilinear, align_corners=False (edges.upsample_logits): where each output pixel samples the grid.
  const low = new Int32Array(size), high = new Int32Array(size), weight = new Float32Array(size);
  for (let i = 0; i < size; i++) {
    const source = Math.max(0, ((i + 0.5) * gridSize) / size - 0.5);
    low[i] = Math.floor(source);
    high[i] = Math.min(low[i] + 1, gridSize - 1);
    weight[i] = source - low[i];
  }
  return [low, high, weight];
}

function previewAlpha(bitmap, data, w, h, scale) {
  // A preview's grey is 127.5 + scale * logit on SAM's grid: its logits, upsampled here the way the server
  // makes its full-size mask (not by the canvas's filter, whose 8-bit arithmetic moves a flat mask's edge),
  // then the server's edge ramp (deployments/edges.py, ALPHA_PER_LOGIT); > 0 is the mask.
  const gw = bitmap.width, gh = bitmap.height;
  const ctx = canvasOf(gw, gh)[1];
  ctx.drawImage(bitmap, 0, 0);
  const grey = ctx.getImageData(0, 0, gw, gh).data;
  const logits = new Float32Array(gw * gh);
  for (let i = 0; i < logits.length; i++) logits[i] = (grey[4 * i] - 127.5) / scale;
  const [x0, x1, wx] = bilinearTaps(w, gw);
  const [y0, y1, wy] = bilinearTaps(h, gh);
  for (let y = 0; y < h; y++) {
    const top = y0[y] * gw, bottom = y1[y] * gw, fy = wy[y];
    for (let x = 0; x < w; x++) {
      const upper = logits[top + x0[x]] + (logits[top + x1[x]] - logits[top + x0[x]]) * wx[x];
      const lower = logits[bottom + x0[x]] + (logits[bottom + x1[x]] - logits[bottom + x0[x]]) * wx[x];
      const logit = upper + (lower - upper) * fy;
      const ramp = Math.min(255, Math.max(0, Math.ceil(127 + ALPHA_PER_LOGIT * logit)));
      const i = 4 * (y * w + x);
      data[i] = data[i + 1] = data[i + 2] = 255;
      data[i + 3] = logit > 0 ? Math.max(ramp, 128) : Math.min(ramp, 127);
    }
  }
}

function maskToAlpha(bitmap) {
  // The preview as white with the mask's alpha, at the shown size, for canvas compositing.
  const [w, h] = displaySize();
  const [canvas, ctx] = canvasOf(w, h);
  const pixels = ctx.createImageData(w, h);
  previewAlpha(bitmap, pixels.data, w, h, state.maskScale);
  ctx.putImageData(pixels, 0, 0);
  return canvas;
}

function drawOverlay() {
  const overlay = $("overlay");
  const cutout = $("cutout");
  const [w, h] = displaySize();
  for (const canvas of [overlay, cutout]) {
    canvas.width = w;
    canvas.height = h;
  }
  const mask = state.mask && maskToAlpha(state.mask);
  overlay.dataset.version = String(Number(overlay.dataset.version || 0) + 1);
  overlay.dataset.empty = mask ? "false" : "true";
  if (!mask) return;

  // Overlay: the tint, kept only where the mask is.
  const octx = overlay.getContext("2d");
  octx.fillStyle = `rgba(${TINT.join(",")}, ${OVERLAY_OPACITY})`;
  octx.fillRect(0, 0, w, h);
  octx.globalCompositeOperation = "destination-in";
  octx.drawImage(mask, 0, 0, w, h);
  octx.globalCompositeOperation = "source-over";

  // After: the photo itself, kept only where the mask is, over the checkerboard.
  const cctx = cutout.getContext("2d");
  cctx.drawImage($("photo"), 0, 0, w, h);
  cctx.globalCompositeOperation = "destination-in";
  cctx.drawImage(mask, 0, 0, w, h);
  cctx.globalCompositeOperation = "source-over";
}

function drawMarkers() {
  const svg = $("markers");
  svg.setAttribute("viewBox", `0 0 ${state.width || 1} ${state.height || 1}`);
  svg.setAttribute("preserveAspectRatio", "none");
  const r = Math.max(state.width, state.height) / 60;
  svg.innerHTML = state.points.map(([x, y], i) => {
    const keep = state.labels[i] === 1;
    return `<g class="${keep ? "keep" : "exclude"}"><circle cx="${x}" cy="${y}" r="${r}"/>` +
      `<path d="M${x - r / 2} ${y}h${r}${keep ? `M${x} ${y - r / 2}v${r}` : ""}"/></g>`;
  }).join("");
  svg.style.setProperty("--stroke", `${r / 4}`);
}

function setView(view) {
  state.view = view;
  for (const name of ["before", "mask", "after"]) {
    const button = $(`view-${name}`);
    button.classList.toggle("active", name === view);
    button.setAttribute("aria-pressed", String(name === view));
  }
  $("overlay").hidden = view !== "mask";
  $("markers").style.visibility = view === "mask" ? "visible" : "hidden";
  $("cutout").hidden = view !== "after";
  $("photo").style.visibility = view === "after" ? "hidden" : "visible";
  $("stage").classList.toggle("checker", view === "after");
}

function setMode(label) {
  state.mode = label;
  $("mode-keep").classList.toggle("active", label === 1);
  $("mode-keep").setAttribute("aria-pressed", String(label === 1));
  $("mode-exclude").classList.toggle("active", label === 0);
  $("mode-exclude").setAttribute("aria-pressed", String(label === 0));
}

// -- download ------------------------------------------------------------------------------------------------

async function download(event) {
  event.preventDefault();
  if (!state.points.length) return;
  clearError();
  const format = $("format").value;
  const extra = { format };
  if ($("use-background").checked) extra.background = $("background").value;
  if ($("crop").checked) extra.crop = "true";
  if ($("refine").checked) extra.refine = "true";
  setBusy(true);
  setStatus("Making the full-resolution cut-out…");
  try {
    const response = await post("v1/cutout", cutoutForm(extra));
    const blob = await response.blob();
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = `${state.name}-cutout.${format === "jpeg" ? "jpg" : format}`;
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
    setStatus(`Downloaded ${link.download} (${Math.round(blob.size / 1024)} KB)`);
  } catch (err) {
    showError(err.message);
    setStatus("");
  } finally {
    setBusy(false);
  }
}

// -- wiring --------------------------------------------------------------------------------------------------

function init() {
  $("api-key").value = apiKey();
  $("api-key").addEventListener("input", saveKey);
  const drop = $("drop");
  $("file").addEventListener("change", () => upload($("file").files[0]));
  for (const name of ["dragenter", "dragover"]) {
    document.addEventListener(name, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  document.addEventListener("dragleave", (e) => { if (!e.relatedTarget) drop.classList.remove("over"); });
  document.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer && e.dataTransfer.files.length) upload(e.dataTransfer.files[0]);
  });
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") $("file").click(); });

  const stage = $("stage");
  stage.addEventListener("click", (e) => addPoint(e, state.mode));
  stage.addEventListener("contextmenu", (e) => addPoint(e, 0));
  $("mode-keep").addEventListener("click", () => setMode(1));
  $("mode-exclude").addEventListener("click", () => setMode(0));
  $("undo").addEventListener("click", undo);
  $("reset").addEventListener("click", reset);
  $("new").addEventListener("click", () => { reset(); state.imageId = null; backToDrop(); });
  for (const view of ["before", "mask", "after"]) $(`view-${view}`).addEventListener("click", () => setView(view));
  $("download-form").addEventListener("submit", download);
  document.addEventListener("keydown", (e) => {
    if ((e.ctrlKey || e.metaKey) && e.key === "z") { e.preventDefault(); undo(); }
  });
  // The layers are drawn at the shown size: redraw when that changes (rotation, resize).
  new ResizeObserver(() => drawOverlay()).observe($("photo"));
  setView("mask");
}

document.addEventListener("DOMContentLoaded", init);
