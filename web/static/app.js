// The page: log in, create images, follow tasks, gallery, history, administration.
// Everything it shows from the service (prompts, usernames, messages) is written with
// textContent, never parsed as HTML.
import { api, ApiError, watchTask } from "./api.js";
import { language, setLanguage, t, translate } from "./i18n.js";
import { MaskEditor } from "./mask.js";
import { addGenerationOptions, applyOptions, currentOptions, describeOptions, optionRows, optionsFromRecord } from "./options.js";

const $ = (selector, root = document) => root.querySelector(selector);
const RATIOS_FALLBACK = { "1:1": [1024, 1024], "16:9": [1664, 928], "9:16": [928, 1664], "4:3": [1472, 1104],
  "3:4": [1104, 1472], "3:2": [1584, 1056], "2:3": [1056, 1584] };
const MODE_DEFAULT_STEPS = { t2i: 50, edit: 40, batch: 40, i2i: 50 };
const MAX_IMAGES = { t2i: 0, edit: 2, batch: 1, i2i: 1 };
const SIDES = ["left", "top", "right", "bottom"];
// The service's defaults: a light redraw without a mask, a full repaint under a mask or when extending.
const STRENGTH_DEFAULT = 0.6;
const STRENGTH_MASKED = 1;

const state = {
  user: null,
  mode: "t2i",
  inputs: [],          // [{blob, name, url}] edit inputs
  lastSeed: null,
  historyPage: 1,
  historyPages: 1,
  usersPage: 1,
  usersPages: 1,
  usersQuery: "",      // the search last submitted (paging keeps it, whatever is typed since)
  mask: null,          // the MaskEditor
  maskFor: null,       // the input it is painted over
  masked: false,       // something is painted
  strengthTouched: false,
  defaultLimits: null, // {daily, monthly}: the service's quota defaults, as refreshQuota last read them
};

// ------------------------------------------------------------------ helpers

function el(tag, { text, cls, attrs } = {}, children = []) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const child of children) node.append(child);
  return node;
}

function showError(err) {
  const detail = err instanceof ApiError ? err.detail : String(err && err.message ? err.message : err);
  $("#alert-text").textContent = detail;
  $("#alert").classList.remove("ok");
  $("#alert").hidden = false;
}

function showNotice(text) {
  $("#alert-text").textContent = text;
  $("#alert").classList.add("ok");
  $("#alert").hidden = false;
}

function hideAlert() { $("#alert").hidden = true; }

/** Runs an action, showing the API's detail when it fails (never a blank page). */
async function guarded(action) {
  try {
    return await action();
  } catch (err) {
    showError(err);
    if (err instanceof ApiError && err.status === 401 && state.user) {
      state.user = null;  // the session ended (expired, or the password changed): log in again
      renderAccount();
    }
    return undefined;
  }
}

function formatDate(value) {
  if (!value) return "";
  const date = new Date(value);
  return isNaN(date) ? String(value) : date.toLocaleString(language() === "zh" ? "zh-CN" : "en");
}

// ------------------------------------------------------------------ session and views

async function loadSession() {
  const session = await api("auth/session");
  state.user = session.user;
  state.allowRegistration = session.allow_registration !== false;
  state.authDisabled = session.auth_enabled === false;
  renderAccount();
}

function renderAccount() {
  const user = state.user;
  $("#nav").hidden = !user;
  $("#logout").hidden = !user || state.authDisabled;
  $("#nav-admin").hidden = !(user && user.is_admin);
  $("#whoami").textContent = user ? user.username : "";
  $("#quota").hidden = !user;
  $("#register").hidden = state.allowRegistration === false;
  for (const node of document.querySelectorAll(".only-admin-filter")) node.hidden = !(user && user.is_admin);
  // Another account's tasks never stay on screen; this one's come back from the service.
  if (state.shownFor !== (user && user.id)) {
    state.shownFor = user && user.id;
    stopWatching();
    if (user) guarded(loadRecent);
  }
  if (user) refreshQuota();
  route();
}

function route() {
  let view = (location.hash || "#create").slice(1);
  if (!state.user) view = "login";
  else if (view === "login" || !$(`#view-${view}`)) view = "create";
  else if (view === "admin" && !state.user.is_admin) view = "create";
  for (const section of document.querySelectorAll(".view")) section.hidden = section.id !== `view-${view}`;
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.dataset.view === view) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (view === "history") loadHistory();
  if (view === "admin") loadAdmin();
}

async function login(event) {
  event.preventDefault();
  hideAlert();
  const form = new FormData($("#login-form"));
  await guarded(async () => {
    state.user = await api("auth/session", { method: "POST",
      json: { username: form.get("username"), password: form.get("password") } });
    $("#login-form").reset();
    renderAccount();
  });
}

async function register() {
  hideAlert();
  const form = new FormData($("#login-form"));
  const credentials = { username: form.get("username"), password: form.get("password") };
  await guarded(async () => {
    await api("auth/register", { method: "POST", json: credentials });
    state.user = await api("auth/session", { method: "POST", json: credentials });
    $("#login-form").reset();
    showNotice(t("login.registered"));
    renderAccount();
  });
}

async function logout() {
  await guarded(() => api("auth/session", { method: "DELETE" }));
  state.user = null;
  renderAccount();
}

async function refreshQuota() {
  const quota = await api("tasks/quota/me").catch(() => null);
  if (!quota) return;
  // What an empty limit box on the admin page stands for.
  state.defaultLimits = { daily: quota.default_daily_limit, monthly: quota.default_monthly_limit };
  const meter = $("#quota-meter");
  meter.max = Math.max(quota.daily_limit, 1);
  meter.value = quota.used_today;
  meter.high = meter.max * 0.8;
  $("#quota-text").textContent = t("quota.of", { used: quota.used_today, limit: quota.daily_limit,
    at: formatDate(quota.daily_resets_at) });
}

// ------------------------------------------------------------------ create

function setMode(mode) {
  state.mode = mode;
  for (const tab of document.querySelectorAll("[data-mode]")) tab.setAttribute("aria-selected", String(tab.dataset.mode === mode));
  const form = $("#create-form");
  form.dataset.mode = mode;
  $("#steps").value = MODE_DEFAULT_STEPS[mode];
  state.inputs = state.inputs.slice(0, MAX_IMAGES[mode] || state.inputs.length);
  $("#files").multiple = MAX_IMAGES[mode] > 1;
  if (mode === "t2i") $("#prompt").placeholder = "";  // the edit hint (useAsEditInput) is no text-to-image prompt
  $("#drop-limit").textContent = t("edit.limit", { n: MAX_IMAGES[mode] });
  renderThumbs();
  syncStrength();
  syncOutputs();
}

async function loadRatios() {
  const ratios = await api("text-to-image/aspect-ratios").catch(() => RATIOS_FALLBACK);
  const box = $("#ratios");
  box.replaceChildren();
  for (const [ratio, [w, h]] of Object.entries(ratios)) {
    const id = `ratio-${ratio.replace(":", "-")}`;
    const input = el("input", { attrs: { type: "radio", name: "aspect_ratio", value: ratio, id } });
    if (ratio === "1:1") input.checked = true;
    // The shape is drawn by a class per ratio (the stylesheet), so no inline style is needed.
    const shape = el("span", { cls: `shape r${ratio.replace(":", "x")}`, attrs: { "aria-hidden": "true" } });
    const label = el("label", { cls: "ratio", attrs: { for: id, title: `${w} × ${h}` } },
      [shape, el("span", { text: ratio }), el("small", { text: `${w}×${h}` })]);
    box.append(input, label);
  }
  const extendTo = $("#extend-to");
  extendTo.replaceChildren(extendTo.options[0]);
  for (const ratio of Object.keys(ratios)) extendTo.append(el("option", { text: ratio, attrs: { value: ratio } }));
}

function syncOutputs() {
  $("#steps-out").textContent = $("#steps").value;
  $("#cfg-out").textContent = $("#cfg").value;
  $("#guidance-out").textContent = $("#guidance").value;
  $("#strength-out").textContent = $("#strength").value;
  $("#mask-size-out").textContent = $("#mask-size").value;
}

// ------------------------------------------------------------------ mask and outpainting

/** The input a mask can be painted over: the image of image-to-image, or the one image of an edit. */
function maskTarget() {
  if (state.mode === "i2i" || (state.mode === "edit" && state.inputs.length === 1)) return state.inputs[0] || null;
  return null;
}

function renderMaskBox() {
  const target = maskTarget();
  $("#mask-box").hidden = !target;
  if (target && target !== state.maskFor) {
    state.maskFor = target;
    state.masked = false;
    state.mask.load(target.url);
  }
  syncStrength();
}

function maskChanged() {
  state.masked = !state.mask.isEmpty();
  syncStrength();
}

function extension() {
  const to = $("#extend-to").value;
  if (to) return { extend_to: to };
  const sides = {};
  for (const side of SIDES) {
    const pixels = Math.max(0, Math.round(Number($(`#extend-${side}`).value) || 0));
    if (pixels) sides[`extend_${side}`] = pixels;
  }
  return Object.keys(sides).length ? sides : null;
}

/** Until the user moves it, the strength slider shows the value the service would use. */
function syncStrength() {
  const masked = state.masked && maskTarget() !== null;
  $("#strength-box").hidden = state.mode === "edit" && !masked;
  if (!state.strengthTouched) {
    const full = state.mode === "edit" || masked || (state.mode === "i2i" && extension() !== null);
    $("#strength").value = full ? STRENGTH_MASKED : STRENGTH_DEFAULT;
  }
  $("#strength-out").textContent = $("#strength").value;
}

function addInputs(files) {
  const limit = MAX_IMAGES[state.mode] || 2;
  for (const file of files) {
    if (!/^image\/(png|jpeg|webp)$/.test(file.type)) continue;
    const entry = { blob: file, name: file.name || "image.png", url: URL.createObjectURL(file) };
    state.inputs.push(entry);
  }
  while (state.inputs.length > limit) {
    const dropped = state.inputs.shift();
    if (dropped !== state.maskFor) URL.revokeObjectURL(dropped.url);
  }
  renderThumbs();
}

function renderThumbs() {
  const list = $("#thumbs");
  list.replaceChildren();
  state.inputs.forEach((input, index) => {
    const remove = el("button", { text: "×", cls: "ghost", attrs: { type: "button", "aria-label": `${t("edit.remove")} ${input.name}` } });
    remove.addEventListener("click", () => {
      URL.revokeObjectURL(input.url);
      state.inputs.splice(index, 1);
      renderThumbs();
    });
    list.append(el("li", {}, [el("img", { attrs: { src: input.url, alt: input.name } }), remove]));
  });
  renderMaskBox();
}

function collectSettings() {
  const ratio = document.querySelector("input[name=aspect_ratio]:checked");
  return {
    mode: state.mode,
    prompt: $("#prompt").value.trim(),
    prompts: $("#prompts").value.split(/\n|\|/).map((p) => p.trim()).filter(Boolean),
    negative_prompt: $("#negative").value,
    aspect_ratio: ratio ? ratio.value : "1:1",
    num_inference_steps: Number($("#steps").value),
    true_cfg_scale: Number($("#cfg").value),
    guidance_scale: Number($("#guidance").value),
    seed: Number($("#seed").value || -1),
    num_images: Number($("#count").value),
    strength: Number($("#strength").value),
    extension: extension(),
    ...currentOptions(state.mode),  // LoRAs, fast mode, custom size, transparent background
  };
}

function applySettings(settings) {
  setMode(settings.mode);
  $("#prompt").value = settings.prompt || "";
  $("#prompts").value = (settings.prompts || []).join("\n");
  $("#negative").value = settings.negative_prompt || "";
  const ratio = document.querySelector(`input[name=aspect_ratio][value="${CSS.escape(settings.aspect_ratio || "1:1")}"]`);
  if (ratio) ratio.checked = true;
  $("#steps").value = settings.num_inference_steps;
  $("#cfg").value = settings.true_cfg_scale;
  $("#guidance").value = settings.guidance_scale ?? 1;
  $("#seed").value = settings.seed ?? -1;
  $("#count").value = String(settings.num_images || 1);
  $("#extend-to").value = (settings.extension && settings.extension.extend_to) || "";
  for (const side of SIDES) $(`#extend-${side}`).value = (settings.extension && settings.extension[`extend_${side}`]) || 0;
  state.strengthTouched = settings.mode === "i2i" && settings.strength !== undefined;
  if (state.strengthTouched) $("#strength").value = settings.strength;
  applyOptions(settings);
  syncStrength();
  syncOutputs();
}

async function submit(event) {
  event.preventDefault();
  hideAlert();
  const settings = collectSettings();
  if (settings.mode === "batch" ? !settings.prompts.length : !settings.prompt) return showError(new Error(t("f.needPrompt")));
  if (settings.mode !== "t2i" && !state.inputs.length) return showError(new Error(t("edit.need")));
  const form = new FormData();
  const add = (k, v) => form.append(k, String(v));
  add("negative_prompt", settings.negative_prompt);
  add("num_inference_steps", settings.num_inference_steps);
  add("true_cfg_scale", settings.true_cfg_scale);
  add("seed", settings.seed);
  let path = "text-to-image";
  if (settings.mode === "t2i") {
    add("prompt", settings.prompt);
    add("aspect_ratio", settings.aspect_ratio);
    add("num_images", settings.num_images);
  } else if (settings.mode === "edit") {
    path = "image-edit";
    add("prompt", settings.prompt);
    add("guidance_scale", settings.guidance_scale);
    add("num_images", settings.num_images);
    for (const input of state.inputs) form.append("images", input.blob, input.name);
    // A mask (and its strength) only over exactly one image, and only when something is painted.
    const mask = state.inputs.length === 1 ? await state.mask.toBlob() : null;
    if (mask) {
      form.append("mask", mask, "mask.png");
      add("strength", settings.strength);
    }
  } else if (settings.mode === "i2i") {
    path = "image-to-image";
    add("prompt", settings.prompt);
    add("num_images", settings.num_images);
    add("strength", settings.strength);
    form.append("image", state.inputs[0].blob, state.inputs[0].name);
    const mask = await state.mask.toBlob();
    if (mask && settings.extension) return showError(new Error(t("extend.notWithMask")));
    if (mask) form.append("mask", mask, "mask.png");
    for (const [key, value] of Object.entries(settings.extension || {})) add(key, value);
  } else {
    path = "image-edit/batch";
    add("prompts", settings.prompts.join("|"));
    form.append("image", state.inputs[0].blob, state.inputs[0].name);
  }
  const problem = addGenerationOptions(form, settings.mode);  // LoRAs, fast mode, custom size
  if (problem) return showError(new Error(problem));
  const accepted = await guarded(() => api(path, { method: "POST", form }));
  if (!accepted) return;
  settings.inputs = state.inputs.map((i) => ({ ...i }));
  trackTask(accepted.task_id, settings);
  refreshQuota();
}

// ------------------------------------------------------------------ tasks

const THUMB_SIZE = 384;     // the gallery's and the task cards' thumbnails (long side, WebP)
const HISTORY_THUMB = 128;  // history rows
const RECENT_TASKS = 20;    // tasks rebuilt from the service when the page opens
const MODES = { text_to_image: "t2i", image_edit: "edit", batch_edit: "batch", image_to_image: "i2i" };

/** One image of a task (numbered from 0): the PNG, or with ``size`` a WebP thumbnail. */
function imageUrl(taskId, n, size) {
  return `tasks/${encodeURIComponent(taskId)}/images/${n}${size ? `?size=${size}` : ""}`;
}

/** The page's settings of a task, read back from its record (history, or after a reload). */
function settingsFromRecord(item) {
  const p = item.parameters || {};
  return {
    mode: MODES[item.task_type] || "t2i", prompt: item.prompt, prompts: p.prompts || [item.prompt],
    negative_prompt: p.negative_prompt || item.negative_prompt || "", aspect_ratio: p.aspect_ratio || "1:1",
    num_inference_steps: p.num_inference_steps, true_cfg_scale: p.true_cfg_scale, guidance_scale: p.guidance_scale,
    num_images: p.num_images || 1, strength: p.strength ?? undefined, seed: item.seed, inputs: [],
    input_urls: item.input_urls || [], mask: Boolean(p.mask),
    ...optionsFromRecord(MODES[item.task_type] || "t2i", p),
  };
}

/** Every task the page shows, by id: {settings, count, seed, seconds, created, stop}. */
const known = new Map();

function stopWatching() {
  for (const task of known.values()) if (task.stop) task.stop();
  known.clear();
  $("#tasks").replaceChildren();
  $("#gallery").replaceChildren();
  $("#tasks-empty").hidden = false;
  $("#gallery-empty").hidden = false;
}

/** The recent tasks from the service: finished ones with their images, running ones followed live. */
async function loadRecent() {
  const page = await api("tasks/history/me", { query: { page: 1, page_size: RECENT_TASKS } });
  for (const item of [...page.items].reverse()) {  // oldest first: each card goes on top
    if (!known.has(item.task_id)) trackTask(item.task_id, settingsFromRecord(item), item);
  }
}

function trackTask(taskId, settings, record = null) {
  const item = $("#task-template").content.firstElementChild.cloneNode(true);
  translate(item);
  item.dataset.taskId = taskId;
  $(".task-prompt", item).textContent = settings.mode === "batch" ? settings.prompts.join(" | ") : settings.prompt;
  const status = $(".task-status", item);
  const meta = $(".task-meta", item);
  const bar = $(".bar", item);
  const fill = $(".bar-fill", item);
  const preview = $(".preview", item);
  const cancel = $(".task-cancel", item);
  const task = { settings, count: 0, seed: settings.seed, seconds: null, created: record && record.created_at, stop: null };
  known.set(taskId, task);
  $("#tasks").prepend(item);
  $("#tasks-empty").hidden = true;

  const show = (update) => {
    if (update.status) {
      status.textContent = t(`st.${update.status}`);
      status.dataset.status = update.status;
      item.dataset.status = update.status;
    }
    if (update.percent !== undefined && update.percent !== null) {
      const percent = Math.max(0, Math.min(100, Math.round(update.percent)));
      fill.style.width = `${percent}%`;  // CSSOM, which a strict style-src allows
      bar.setAttribute("aria-valuenow", String(percent));
      bar.dataset.percent = String(percent);
    }
    if (update.status === "pending") meta.textContent = update.position ? t("tasks.queued", { n: update.position }) : t("tasks.starting");
    if (update.status === "running" && update.total_steps) {
      // after the last step the image is decoded, encoded and stored: say so rather than look stuck
      meta.textContent = update.current_step >= update.total_steps
        ? t("tasks.finishing") : t("tasks.running", { step: update.current_step, total: update.total_steps });
    }
    if (update.preview) { preview.src = update.preview; preview.hidden = false; }
    if (update.status === "cancelled" || update.status === "failed") {
      preview.hidden = true;  // a stopped task keeps no half-made picture
      preview.removeAttribute("src");
      cancel.hidden = true;
      bar.hidden = true;
      if (update.status === "cancelled") meta.textContent = t("tasks.cancelled");
    }
    if (update.error) meta.textContent = update.error;
  };

  const finished = (count, seed, seconds) => {
    Object.assign(task, { count, seed, seconds });
    if (seed !== null && seed !== undefined) state.lastSeed = seed;
    cancel.hidden = true;
    preview.hidden = true;
    preview.removeAttribute("src");
    meta.textContent = t("tasks.done", { s: seconds != null ? Number(seconds).toFixed(1) : "?", seed: seed ?? "?" });
    $(".task-images", item).replaceChildren(...thumbButtons(taskId, count, THUMB_SIZE));
    addToGallery(taskId);
  };

  if (record && record.status !== "pending" && record.status !== "running") {
    show({ status: record.status, percent: record.status === "completed" ? 100 : 0, error: record.error_message });
    if (record.status === "completed") finished(record.image_count, record.seed, record.execution_time);
    return;
  }
  show({ status: record ? record.status : "pending", percent: 0 });
  task.stop = watchTask(taskId, async (update) => {
    show(update);
    if (update.status === "completed") {
      const answer = await guarded(() => api(`tasks/${encodeURIComponent(taskId)}`));
      if (answer) finished(answer.image_urls ? answer.image_urls.length : 1, answer.seed, answer.execution_time_seconds);
      refreshQuota();
    }
  });
  cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    const answer = await guarded(() => api(`tasks/${encodeURIComponent(taskId)}`, { method: "DELETE" }));
    cancel.disabled = false;
    if (answer && answer.status === "cancelled") { show({ status: "cancelled" }); task.stop(); }
  });
}

/** Thumbnails of a task's images, each a button that opens the viewer on it. */
function thumbButtons(taskId, count, size) {
  const task = known.get(taskId);
  const prompt = task ? promptOf(task.settings, 0) : "";
  return Array.from({ length: count }, (_, n) => {
    const img = el("img", { attrs: { src: imageUrl(taskId, n, size), alt: prompt, loading: "lazy" } });
    const button = el("button", { cls: transparent(task) ? "thumb alpha" : "thumb", attrs: { type: "button", "data-task-id": taskId, "data-n": String(n),
      "aria-label": t("v.open", { n: n + 1, count }) } }, [img]);
    button.addEventListener("click", () => openViewer(taskId, n, button.closest("#history-table") ? "history" : "gallery"));
    return button;
  });
}

/** Whether a task's images have a transparent background (shown on a checkerboard). */
function transparent(task) {
  return Boolean(task && task.settings.background === "transparent");
}

function promptOf(settings, index) {
  return settings.mode === "batch" ? settings.prompts[index] || settings.prompts.join(" | ") : settings.prompt;
}

function describe(settings) {
  const parts = [];
  if (settings.mode === "t2i" && !settings.width) parts.push(settings.aspect_ratio);  // else the custom size, below
  if (settings.mode === "i2i") parts.push(`${t("f.strength")} ${settings.strength}`);
  parts.push(`${t("f.steps")} ${settings.num_inference_steps}`, `CFG ${settings.true_cfg_scale}`);
  const options = describeOptions(settings);
  if (options) parts.push(options);
  if (settings.negative_prompt) parts.push(`− ${settings.negative_prompt}`);
  return parts.join(" · ");
}

/** One card per task in the gallery: its images together, its prompt and settings, two actions. */
function addToGallery(taskId) {
  if ($(`#gallery .shot[data-task-id="${CSS.escape(taskId)}"]`)) return;
  const task = known.get(taskId);
  const item = $("#image-template").content.firstElementChild.cloneNode(true);
  translate(item);
  item.dataset.taskId = taskId;
  const images = $(".shot-images", item);
  images.dataset.count = String(Math.min(task.count, 4));
  images.append(...thumbButtons(taskId, task.count, THUMB_SIZE));
  $(".shot-prompt", item).textContent = promptOf(task.settings, 0);
  // One seed per task: the images of a task share one generator, so the seed reproduces the set.
  $(".shot-meta", item).textContent = t("g.meta", { seed: task.seed ?? "?", params: describe(task.settings) });
  const download = $(".dl", item);
  download.href = `tasks/${encodeURIComponent(taskId)}/result`;
  download.download = `${taskId}.${task.count > 1 ? "zip" : "png"}`;
  download.textContent = task.count > 1 ? t("g.zipN", { n: task.count }) : t("g.png");
  $(".again", item).addEventListener("click", () => sameSettingsAgain(taskId));
  $("#gallery").prepend(item);
  $("#gallery-empty").hidden = true;
}

async function sameSettingsAgain(taskId) {
  const task = known.get(taskId);
  applySettings({ ...task.settings, seed: Number.isFinite(task.seed) ? task.seed : -1 });
  if ((task.settings.inputs || []).length) {
    state.inputs = task.settings.inputs.map((i) => ({ ...i, url: URL.createObjectURL(i.blob) }));
    renderThumbs();
  } else if ((task.settings.input_urls || []).length) {
    await restoreInputs(taskId, task.settings);
  }
  closeViewer();
  location.hash = "#create";
  $("#prompt").focus();
}

/** A task rebuilt from its record (after a reload) keeps no images in the page: its inputs are read
 * back from the service as they were sent. An inpainting's mask (the last input) is not: it is
 * painted again over the image. */
async function restoreInputs(taskId, settings) {
  const count = settings.input_urls.length - (settings.mask ? 1 : 0);
  const files = [];
  for (let n = 0; n < count; n += 1) {
    const response = await guarded(() => api(`tasks/${encodeURIComponent(taskId)}/inputs/${n}`, { raw: true }));
    if (!response) return;
    const blob = await response.blob();
    const extension = { "image/jpeg": "jpg", "image/webp": "webp" }[blob.type] || "png";
    files.push(new File([blob], `${taskId.slice(0, 8)}_input_${n + 1}.${extension}`, { type: blob.type }));
  }
  for (const input of state.inputs) URL.revokeObjectURL(input.url);
  state.inputs = [];
  addInputs(files);
}

/** A result image becomes the input of an edit. Coming from text to image, the prompt described
 * the picture, not a change to it: it is cleared, and the box asks for the change instead. */
async function useAsEditInput(taskId, n) {
  const response = await guarded(() => api(imageUrl(taskId, n), { raw: true }));
  if (!response) return;
  const blob = await response.blob();
  const task = known.get(taskId);
  const fromText = state.mode === "t2i" || state.mode === "batch";
  if (fromText) setMode("edit");
  if (fromText || (task && $("#prompt").value.trim() === task.settings.prompt)) $("#prompt").value = "";
  $("#prompt").placeholder = t("edit.promptHint");
  addInputs([new File([blob], `${taskId}_${n}.png`, { type: "image/png" })]);
  closeViewer();
  location.hash = "#create";
  showNotice(t("g.added"));
  $("#prompt").focus();
}

// ------------------------------------------------------------------ viewer

const viewer = { list: [], at: 0 };

/** Opens the full-size viewer on image ``n`` of a task; the arrows move through the images of the
 * gallery (or of the history page it was opened from), in the order shown. */
function openViewer(taskId, n, from = "gallery") {
  const root = from === "history" ? "#history-table" : "#gallery";
  viewer.list = [...document.querySelectorAll(`${root} button.thumb`)].map((b) => ({ taskId: b.dataset.taskId, n: Number(b.dataset.n) }));
  viewer.at = Math.max(0, viewer.list.findIndex((e) => e.taskId === taskId && e.n === n));
  if (!viewer.list.length) viewer.list = [{ taskId, n }];
  showInViewer();
  const dialog = $("#viewer");
  if (!dialog.open) dialog.showModal();
}

function closeViewer() {
  if ($("#viewer").open) $("#viewer").close();
}

function stepViewer(by) {
  if (viewer.list.length < 2) return;
  viewer.at = (viewer.at + by + viewer.list.length) % viewer.list.length;
  showInViewer();
}

function showInViewer() {
  const { taskId, n } = viewer.list[viewer.at];
  const task = known.get(taskId);
  const settings = task.settings;
  const img = $("#viewer-image");
  img.src = imageUrl(taskId, n);
  img.alt = promptOf(settings, n);
  img.classList.toggle("alpha", transparent(task));
  $("#viewer-prompt").textContent = promptOf(settings, n);
  // "3 / 12 · image 2 of 4" when there is somewhere to go; nothing to say for a lone image
  const position = task.count > 1 ? t("v.position", { at: viewer.at + 1, of: viewer.list.length, n: n + 1, count: task.count })
    : viewer.list.length > 1 ? `${viewer.at + 1} / ${viewer.list.length}` : "";
  $("#viewer-position").textContent = position;
  const rows = [
    [t("h.type"), t(`type.${Object.keys(MODES).find((k) => MODES[k] === settings.mode)}`)],
    [t("v.seed"), task.seed ?? "?"],
    [t("f.steps"), settings.num_inference_steps],
    ["CFG", settings.true_cfg_scale],
  ];
  if (settings.mode === "t2i" && !settings.width) rows.push([t("f.ratio"), settings.aspect_ratio]);
  if (settings.mode === "edit") rows.push([t("f.guidance"), settings.guidance_scale]);
  if (settings.mode === "i2i" && settings.strength !== undefined) rows.push([t("f.strength"), settings.strength]);
  rows.push(...optionRows(settings));  // custom size, LoRAs, fast mode, transparent background
  if (settings.negative_prompt) rows.push([t("f.negative"), settings.negative_prompt]);
  if (task.seconds != null) rows.push([t("h.seconds"), Number(task.seconds).toFixed(1)]);
  if (task.created) rows.push([t("h.created"), formatDate(task.created)]);
  $("#viewer-settings").replaceChildren(...rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
  const download = $("#viewer-download");
  download.href = imageUrl(taskId, n);
  download.download = `${taskId}_${n}.png`;
  $("#viewer-prev").hidden = $("#viewer-next").hidden = viewer.list.length < 2;
}

function wireViewer() {
  const dialog = $("#viewer");
  $("#viewer-prev").addEventListener("click", () => stepViewer(-1));
  $("#viewer-next").addEventListener("click", () => stepViewer(1));
  $("#viewer-close").addEventListener("click", closeViewer);
  $("#viewer-edit").addEventListener("click", () => { const e = viewer.list[viewer.at]; useAsEditInput(e.taskId, e.n); });
  $("#viewer-again").addEventListener("click", () => sameSettingsAgain(viewer.list[viewer.at].taskId));
  dialog.addEventListener("keydown", (e) => {
    if (e.key === "ArrowLeft") { e.preventDefault(); stepViewer(-1); }
    if (e.key === "ArrowRight") { e.preventDefault(); stepViewer(1); }
  });
  // A click on the backdrop (outside the dialog's box) closes it.
  dialog.addEventListener("click", (e) => { if (e.target === dialog) closeViewer(); });
}

// ------------------------------------------------------------------ history and statistics

function renderStats(box, stats) {
  box.replaceChildren();
  for (const [key, value] of Object.entries(stats)) {
    if (value !== null && typeof value === "object") continue;
    const shown = typeof value === "number" && !Number.isInteger(value) ? value.toFixed(2) : value;
    const label = t(`s.${key}`) === `s.${key}` ? key.replace(/_/g, " ") : t(`s.${key}`);  // fields added later
    box.append(el("div", { cls: "stat" }, [el("strong", { text: shown ?? "—" }), el("span", { text: label })]));
  }
}

async function loadHistory() {
  await guarded(async () => {
    const form = new FormData($("#history-form"));
    const all = form.get("all") && state.user.is_admin;
    const query = { page: state.historyPage, page_size: 20, status: form.get("status"), task_type: form.get("task_type"),
      start_date: form.get("start_date") ? `${form.get("start_date")}T00:00:00` : "",
      end_date: form.get("end_date") ? `${form.get("end_date")}T23:59:59` : "" };
    if (all) query.user_id = form.get("user_id");
    const [page, stats] = await Promise.all([api(all ? "tasks/history/all" : "tasks/history/me", { query }),
      api("tasks/statistics/me")]);
    renderStats($("#stats"), stats);
    const body = $("#history-table tbody");
    body.replaceChildren();
    for (const item of page.items) {
      const images = el("td", { cls: "thumb-cell" });
      const actions = el("td");
      if (item.status === "completed") {
        if (!known.has(item.task_id)) {
          known.set(item.task_id, { settings: settingsFromRecord(item), count: item.image_count, seed: item.seed,
            seconds: item.execution_time, created: item.created_at, stop: null });
        }
        images.append(...thumbButtons(item.task_id, item.image_count, HISTORY_THUMB));
        const again = el("button", { text: t("g.again"), cls: "ghost", attrs: { type: "button" } });
        again.addEventListener("click", () => sameSettingsAgain(item.task_id));
        actions.append(again);
      }
      const status = el("span", { text: t(`st.${item.status}`), cls: "badge", attrs: { "data-status": item.status } });
      body.append(el("tr", {}, [images, el("td", { text: formatDate(item.created_at) }), el("td", { text: t(`type.${item.task_type}`) }),
        el("td", { text: item.prompt, cls: "prompt-cell" }), el("td", {}, [status]),
        el("td", { text: item.execution_time != null ? item.execution_time.toFixed(1) : "" }), actions]));
    }
    if (!page.items.length) body.append(el("tr", {}, [el("td", { text: t("h.none"), attrs: { colspan: "7" } })]));
    state.historyPages = Math.max(page.total_pages, 1);
    $("#page-info").textContent = t("h.page", { page: page.page, pages: state.historyPages, total: page.total });
    $("#page-prev").disabled = page.page <= 1;
    $("#page-next").disabled = page.page >= state.historyPages;
  });
}

// ------------------------------------------------------------------ administration

const USERS_PER_PAGE = 50;

async function loadAdmin() {
  await guarded(async () => {
    // The quota is read again too: its defaults name what an empty limit box stands for.
    const [stats, security] = await Promise.all([api("tasks/statistics/global"),
      api("admin/security").catch(() => null), refreshQuota()]);
    renderStats($("#global-stats"), stats);
    const warn = Boolean(security && security.default_admin_password);
    $("#admin-warning").hidden = !warn;
    if (warn) $("#admin-warning-text").textContent = t("admin.defaultPassword", { name: security.admin_username });
  });
  await loadUsers();
}

/** One page of users (those the search box names), in one request: each user's limits come with it. */
async function loadUsers() {
  await guarded(async () => {
    const query = { q: state.usersQuery, skip: (state.usersPage - 1) * USERS_PER_PAGE, limit: USERS_PER_PAGE };
    const response = await api("auth/users", { query, raw: true });
    const users = await response.json();
    const total = Number(response.headers.get("x-total-count") || users.length);
    state.usersPages = Math.max(Math.ceil(total / USERS_PER_PAGE), 1);
    if (state.usersPage > state.usersPages) {  // users deleted meanwhile: the last page there is now
      state.usersPage = state.usersPages;
      return loadUsers();
    }
    const body = $("#users-table tbody");
    body.replaceChildren(...users.map(userRow));
    if (!users.length) body.append(el("tr", {}, [el("td", { text: t("admin.none"), attrs: { colspan: "6" } })]));
    $("#users-info").textContent = t("admin.page", { page: state.usersPage, pages: state.usersPages, total });
    $("#users-prev").disabled = state.usersPage <= 1;
    $("#users-next").disabled = state.usersPage >= state.usersPages;
  });
}

function userRow(user) {
  const self = user.id === state.user.id;
  let row;
  // An action changes one user: only that row is rebuilt (or removed), not the whole list.
  const button = (text, action) => {
    const b = el("button", { text, cls: "ghost", attrs: { type: "button" } });
    b.disabled = self;
    b.addEventListener("click", () => guarded(async () => {
      const changed = await action();
      if (changed === null) await loadUsers();  // gone: the page, its count and the pages after move up
      else if (changed) row.replaceWith(userRow({ ...user, ...changed }));
    }));
    return b;
  };
  const fallback = (n) => (n == null ? t("default") : t("admin.defaultN", { n }));
  const defaults = state.defaultLimits || {};
  const daily = el("input", { attrs: { type: "number", min: "0", "aria-label": `${user.username} daily`,
    placeholder: fallback(defaults.daily) } });
  const monthly = el("input", { attrs: { type: "number", min: "0", "aria-label": `${user.username} monthly`,
    placeholder: fallback(defaults.monthly) } });
  // The user's own limits come with the list (empty: the service default applies).
  if (user.daily_limit != null) daily.value = user.daily_limit;
  if (user.monthly_limit != null) monthly.value = user.monthly_limit;
  const save = el("button", { text: t("admin.save"), cls: "ghost", attrs: { type: "button" } });
  save.addEventListener("click", () => guarded(async () => {
    const limits = { daily_limit: daily.value === "" ? null : Number(daily.value),
      monthly_limit: monthly.value === "" ? null : Number(monthly.value) };
    await api(`auth/users/${user.id}/quota`, { method: "PUT", json: limits });
    Object.assign(user, limits);  // a row rebuilt later (after a toggle) shows them
    showNotice(t("admin.saved"));
  }));
  const actions = el("div", { cls: "row" }, [
    button(user.is_active ? t("admin.disable") : t("admin.enable"), async () => {
      const answer = await api(`auth/users/${user.id}/toggle-active`, { method: "PUT" });
      return { is_active: answer.is_active };
    }),
    button(user.is_admin ? t("admin.dropAdmin") : t("admin.makeAdmin"), async () => {
      const answer = await api(`auth/users/${user.id}/toggle-admin`, { method: "PUT" });
      return { is_admin: answer.is_admin };
    }),
    button(t("admin.delete"), async () => {
      if (!confirm(t("admin.confirmDelete", { name: user.username }))) return undefined;
      await api(`auth/users/${user.id}`, { method: "DELETE" });
      return null;
    }),
  ]);
  row = el("tr", {}, [el("td", { text: user.id }), el("td", { text: user.username }),
    el("td", { text: user.is_active ? t("yes") : t("no") }), el("td", { text: user.is_admin ? t("yes") : t("no") }),
    el("td", {}, [el("div", { cls: "row" }, [daily, monthly, save])]), el("td", {}, [actions])]);
  return row;
}

async function cleanup(event) {
  event.preventDefault();
  const form = new FormData($("#cleanup-form"));
  const answer = await guarded(() => api("tasks/cleanup", { method: "POST",
    query: { max_age_hours: form.get("max_age_hours"), max_age_days: form.get("max_age_days") } }));
  if (answer) { $("#cleanup-out").textContent = answer.message; loadAdmin(); }
}

// ------------------------------------------------------------------ wiring

function wire() {
  $("#lang").value = language();
  $("#lang").addEventListener("change", (e) => {
    setLanguage(e.target.value);
    setMode(state.mode);
    if (state.user) { refreshQuota(); route(); }
  });
  $("#alert-close").addEventListener("click", hideAlert);
  $("#login-form").addEventListener("submit", login);
  $("#register").addEventListener("click", register);
  $("#logout").addEventListener("click", logout);
  window.addEventListener("hashchange", route);

  for (const tab of document.querySelectorAll("[data-mode]")) tab.addEventListener("click", () => setMode(tab.dataset.mode));
  $("#create-form").addEventListener("submit", submit);
  for (const id of ["steps", "cfg", "guidance"]) $(`#${id}`).addEventListener("input", syncOutputs);
  $("#strength").addEventListener("input", () => { state.strengthTouched = true; syncOutputs(); });
  state.mask = new MaskEditor($("#mask-canvas"), $("#mask-image"), maskChanged);
  const setTool = (tool) => {
    state.mask.tool = tool;
    $("#mask-brush").setAttribute("aria-pressed", String(tool === "brush"));
    $("#mask-eraser").setAttribute("aria-pressed", String(tool === "eraser"));
  };
  $("#mask-brush").addEventListener("click", () => setTool("brush"));
  $("#mask-eraser").addEventListener("click", () => setTool("eraser"));
  $("#mask-size").addEventListener("input", () => { state.mask.size = Number($("#mask-size").value); syncOutputs(); });
  $("#mask-clear").addEventListener("click", () => state.mask.clear());
  $("#mask-invert").addEventListener("click", () => state.mask.invert());
  // Sides or a ratio: choosing one resets the other, as the service takes one or the other.
  for (const side of SIDES) {
    $(`#extend-${side}`).addEventListener("input", () => { $("#extend-to").value = ""; syncStrength(); });
  }
  $("#extend-to").addEventListener("change", () => {
    for (const side of SIDES) $(`#extend-${side}`).value = 0;
    syncStrength();
  });
  $("#seed-random").addEventListener("click", () => { $("#seed").value = -1; });
  $("#seed-reuse").addEventListener("click", () => { if (state.lastSeed !== null) $("#seed").value = state.lastSeed; });
  $("#files").addEventListener("change", (e) => { addInputs(e.target.files); e.target.value = ""; });
  const drop = $("#drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); addInputs(e.dataTransfer.files); });

  $("#history-form").addEventListener("submit", (e) => { e.preventDefault(); state.historyPage = 1; loadHistory(); });
  $("#page-prev").addEventListener("click", () => { state.historyPage = Math.max(1, state.historyPage - 1); loadHistory(); });
  $("#page-next").addEventListener("click", () => { state.historyPage = Math.min(state.historyPages, state.historyPage + 1); loadHistory(); });
  $("#users-form").addEventListener("submit", (e) => {
    e.preventDefault();
    state.usersQuery = new FormData(e.target).get("q").trim();
    state.usersPage = 1;
    loadUsers();
  });
  $("#users-prev").addEventListener("click", () => { state.usersPage = Math.max(1, state.usersPage - 1); loadUsers(); });
  $("#users-next").addEventListener("click", () => { state.usersPage = Math.min(state.usersPages, state.usersPage + 1); loadUsers(); });
  $("#cleanup-form").addEventListener("submit", cleanup);
  wireViewer();
  // Ctrl+Enter (⌘+Enter on a Mac) generates from anywhere on the Create view, as in ComfyUI and AUTOMATIC1111.
  document.addEventListener("keydown", (e) => {
    if (e.key !== "Enter" || !(e.ctrlKey || e.metaKey) || $("#view-create").hidden || $("#viewer").open) return;
    e.preventDefault();
    $("#create-form").requestSubmit();
  });
}

async function start() {
  translate();
  wire();
  await loadRatios();
  setMode("t2i");
  await guarded(loadSession);
  document.body.dataset.ready = "true";
}

start();
