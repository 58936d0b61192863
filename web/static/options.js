// Generation options beyond the contract's form: LoRA adapters from the catalogue (GET /loras),
// fast mode (speed=fast) and a custom size in pixels (width + height). app.js calls
// addGenerationOptions() where it builds a request; everything else lives here.
import { api } from "./api.js";
import { extendTexts, t, translate } from "./i18n.js";

// The service's limits (models/aspect.py and models/adapters.py; a unit test keeps them equal).
export const MIN_SIDE = 256;
export const MAX_SIDE = 2048;
export const SIDE_MULTIPLE = 16;
export const MAX_LORAS = 3;
export const MIN_SCALE = -2;
export const MAX_SCALE = 2;

// Which catalogue model each form mode runs on, and which modes take a size in pixels.
const MODEL_OF_MODE = { t2i: "text_to_image", i2i: "text_to_image", edit: "image_edit", batch: "image_edit" };
const SIZED_MODES = new Set(["t2i", "i2i"]);

extendTexts({
  en: {
    "o.loras": "LoRA adapters (up to 3)", "o.add": "Add", "o.choose": "Choose an adapter…",
    "o.scale": "Scale", "o.remove": "Remove {name}", "o.noLoras": "No adapters for this model yet: an administrator registers them.",
    "o.full": "Up to 3 adapters per image.",
    "o.fast": "Fast mode", "o.fastHint": "Lightning: a few steps, CFG off — the step and CFG settings are ignored.",
    "o.custom": "Custom size", "o.width": "Width", "o.height": "Height",
    "o.sizeHint": "{min}–{max} px, multiples of {step}",
    "o.sideInvalid": "{field} must be a multiple of {step} from {min} to {max} (got {value}).",
    "o.size": "Size", "o.on": "on", "o.background": "Background",
    "o.transparent": "Transparent background", "o.transparentShort": "transparent",
    "o.transparentHint": "A PNG with an alpha channel, shown here on a checkerboard.",
  },
  zh: {
    "o.loras": "LoRA 适配器（最多 3 个）", "o.add": "添加", "o.choose": "选择适配器…",
    "o.scale": "强度", "o.remove": "移除 {name}", "o.noLoras": "此模型暂无适配器：由管理员注册。",
    "o.full": "每张图最多 3 个适配器。",
    "o.fast": "快速模式", "o.fastHint": "Lightning：少量步数、关闭 CFG —— 步数与 CFG 设置不生效。",
    "o.custom": "自定义尺寸", "o.width": "宽", "o.height": "高",
    "o.sizeHint": "{min}–{max} 像素，{step} 的倍数",
    "o.sideInvalid": "{field}必须是 {step} 的倍数，范围 {min}–{max}（当前 {value}）。",
    "o.size": "尺寸", "o.on": "开", "o.background": "背景",
    "o.transparent": "透明背景", "o.transparentShort": "透明",
    "o.transparentHint": "带 alpha 通道的 PNG，此处以棋盘格底显示。",
  },
});

const $ = (selector, root = document) => root.querySelector(selector);
const state = {
  catalogue: [],                                // GET /loras
  chosen: { text_to_image: [], image_edit: [] },  // [{name, scale}] per model
};

function mode() { return $("#create-form").dataset.mode || "t2i"; }
function model() { return MODEL_OF_MODE[mode()]; }

function node(tag, attrs = {}, text) {
  const element = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) element.setAttribute(k, v);
  if (text !== undefined) element.textContent = text;
  return element;
}

// ------------------------------------------------------------------ LoRA picker

async function loadCatalogue() {
  state.catalogue = await api("loras").catch(() => []);
  renderLoras();
}

function renderLoras() {
  const kind = model();
  const available = state.catalogue.filter((a) => a.model === kind);
  const chosen = state.chosen[kind];
  const select = $("#lora-select");
  // A redraw (the catalogue read again, the language changed) keeps the adapter being chosen.
  const choosing = select.value;
  select.replaceChildren(node("option", { value: "" }, t("o.choose")));
  for (const adapter of available) {
    if (chosen.some((c) => c.name === adapter.name)) continue;
    const option = node("option", { value: adapter.name }, adapter.name);
    const about = [adapter.description, adapter.trigger_words.length ? `⟨${adapter.trigger_words.join(", ")}⟩` : ""];
    if (about.some(Boolean)) option.title = about.filter(Boolean).join(" ");
    select.append(option);
  }
  if ([...select.options].some((o) => o.value === choosing)) select.value = choosing;
  const full = chosen.length >= MAX_LORAS;
  select.disabled = full || select.options.length < 2;
  $("#lora-add").disabled = select.disabled;
  $("#lora-empty").hidden = available.length > 0;
  $("#lora-full").hidden = !full;

  const list = $("#lora-list");
  list.replaceChildren();
  for (const entry of chosen) {
    const id = `lora-scale-${entry.name}`;
    const range = node("input", { type: "range", id, min: String(MIN_SCALE), max: String(MAX_SCALE), step: "0.05",
      value: String(entry.scale), "data-lora": entry.name });
    const out = node("output", { for: id }, formatScale(entry.scale));
    range.addEventListener("input", () => { entry.scale = Number(range.value); out.textContent = formatScale(entry.scale); });
    const remove = node("button", { type: "button", class: "ghost", "aria-label": t("o.remove", { name: entry.name }) }, "×");
    remove.addEventListener("click", () => {
      state.chosen[kind] = chosen.filter((c) => c !== entry);
      renderLoras();
    });
    const label = node("label", { for: id, class: "lora-name" }, entry.name);
    const item = node("li", { class: "lora", "data-lora": entry.name });
    item.append(label, node("span", { class: "sr" }, t("o.scale")), range, out, remove);
    list.append(item);
  }
}

function formatScale(scale) { return String(Math.round(scale * 100) / 100); }

function addLora() {
  const name = $("#lora-select").value;
  const adapter = state.catalogue.find((a) => a.name === name);
  const chosen = state.chosen[model()];
  if (!adapter || chosen.length >= MAX_LORAS) return;
  chosen.push({ name, scale: adapter.default_scale });
  renderLoras();
}

// ------------------------------------------------------------------ fast mode and custom size

function syncFast() {
  const fast = $("#fast").checked;
  for (const id of ["steps", "cfg"]) {
    const input = $(`#${id}`);
    input.disabled = fast;  // app.js still reads the value; the service ignores it in fast mode
    input.closest("label").classList.toggle("greyed", fast);
  }
  $("#fast-hint").hidden = !fast;
}

function syncSize() {
  const custom = $("#custom-size").checked;
  $("#size-fields").hidden = !custom;
  $("#ratios").classList.toggle("greyed", custom && mode() === "t2i");
}

/** The custom size's problem, or null when it is one the service takes. */
function sizeProblem() {
  for (const [id, field] of [["width", t("o.width")], ["height", t("o.height")]]) {
    const input = $(`#size-${id}`);
    const value = Number(input.value);
    const ok = input.value !== "" && Number.isInteger(value) && value >= MIN_SIDE && value <= MAX_SIDE
      && value % SIDE_MULTIPLE === 0;
    input.setAttribute("aria-invalid", String(!ok));
    if (!ok) {
      input.focus();
      return t("o.sideInvalid", { field, step: SIDE_MULTIPLE, min: MIN_SIDE, max: MAX_SIDE, value: input.value || "—" });
    }
  }
  return null;
}

/**
 * Adds the options to a request's form, as the API takes them: ``loras=name:scale,…``,
 * ``speed=fast``, and ``width``/``height`` in place of ``aspect_ratio``. Returns a message when
 * the form cannot be sent as it is (nothing is added then), else null.
 */
export function addGenerationOptions(form, formMode = mode()) {
  const sized = SIZED_MODES.has(formMode) && $("#custom-size").checked;
  if (sized) {
    const problem = sizeProblem();
    if (problem) return problem;
    form.delete("aspect_ratio");
    form.append("width", String(Number($("#size-width").value)));
    form.append("height", String(Number($("#size-height").value)));
  }
  const chosen = state.chosen[MODEL_OF_MODE[formMode]] || [];
  if (chosen.length) form.append("loras", chosen.map((c) => `${c.name}:${formatScale(c.scale)}`).join(","));
  if ($("#fast").checked) form.append("speed", "fast");
  if (transparentOffered(formMode) && $("#transparent").checked) form.append("background", "transparent");
  return null;
}

/**
 * The options of the form as a task's settings keep them (what *Same settings again* restores):
 * ``loras`` [{name, scale}], ``speed`` ("fast"), ``width``/``height`` (a custom size only) and
 * ``background`` ("transparent").
 */
export function currentOptions(formMode = mode()) {
  const options = { loras: (state.chosen[MODEL_OF_MODE[formMode]] || []).map((c) => ({ ...c })) };
  if ($("#fast").checked) options.speed = "fast";
  if (SIZED_MODES.has(formMode) && $("#custom-size").checked) {
    options.width = Number($("#size-width").value);
    options.height = Number($("#size-height").value);
  }
  if (transparentOffered(formMode) && $("#transparent").checked) options.background = "transparent";
  return options;
}

// The default output of an image-to-image (models/aspect.py redraw_output_size): the input's (or
// the extended canvas's) ratio at about a megapixel, sides multiples of 16, the long one ≤ MAX_SIDE.
function redrawSize(width, height) {
  const ratio = width / height;
  const w = Math.round(Math.sqrt(1024 * 1024 * ratio) / 32) * 32;
  const h = Math.round(Math.sqrt(1024 * 1024 * ratio) / ratio / 32) * 32;
  const scale = Math.min(1, MAX_SIDE / Math.max(w, h));
  const side = (v) => Math.max(SIDE_MULTIPLE, Math.floor(Math.floor(v / 16) * 16 * scale / SIDE_MULTIPLE) * SIDE_MULTIPLE);
  return [side(w), side(h)];
}

/**
 * The same options read back from a task's record (``parameters``), for a task made in another
 * session. A record always holds the output's size; it was a custom one when no ratio gave it
 * (text to image), or when it is not the input's own (image to image).
 */
export function optionsFromRecord(formMode, parameters) {
  const p = parameters || {};
  const options = { loras: (p.loras || []).map((a) => ({ name: a.name, scale: Number(a.scale) })) };
  if (p.speed === "fast") options.speed = "fast";
  if (p.background === "transparent") options.background = "transparent";
  if (SIZED_MODES.has(formMode) && !p.aspect_ratio && p.width && p.height) {
    let custom = formMode === "t2i";
    if (!custom && p.input_sizes && p.input_sizes.length) {
      const [iw, ih] = p.input_sizes[0];
      const [l, tp, r, b] = p.outpaint || [0, 0, 0, 0];
      const [dw, dh] = redrawSize(iw + l + r, ih + tp + b);
      custom = dw !== p.width || dh !== p.height;
    }
    if (custom) Object.assign(options, { width: p.width, height: p.height });
  }
  return options;
}

/** Puts a task's options back into the form (after app.js has set its mode). */
export function applyOptions(settings) {
  const formMode = settings.mode || mode();
  state.chosen[MODEL_OF_MODE[formMode]] = (settings.loras || []).slice(0, MAX_LORAS).map((c) => ({ ...c }));
  $("#fast").checked = settings.speed === "fast";
  const sized = SIZED_MODES.has(formMode) && Boolean(settings.width && settings.height);
  $("#custom-size").checked = sized;
  if (sized) {
    $("#size-width").value = String(settings.width);
    $("#size-height").value = String(settings.height);
  }
  $("#transparent").checked = settings.background === "transparent";
  syncFast();
  syncSize();
  renderLoras();
  syncTransparent();
}

/** The options as [label, value] rows (the viewer's settings list). */
export function optionRows(settings) {
  const rows = [];
  if (settings.width && settings.height) rows.push([t("o.size"), `${settings.width}×${settings.height}`]);
  if ((settings.loras || []).length) {
    rows.push(["LoRA", settings.loras.map((c) => `${c.name}:${formatScale(c.scale)}`).join(", ")]);
  }
  if (settings.speed === "fast") rows.push([t("o.fast"), t("o.on")]);
  if (settings.background === "transparent") rows.push([t("o.background"), t("o.transparentShort")]);
  return rows;
}

/** The options as the page shows them beside a result (a gallery card): "768×512 · watercolor:0.65 · Fast mode". */
export function describeOptions(settings) {
  const parts = [];
  if (settings.width && settings.height) parts.push(`${settings.width}×${settings.height}`);
  for (const c of settings.loras || []) parts.push(`${c.name}:${formatScale(c.scale)}`);
  if (settings.speed === "fast") parts.push(t("o.fast"));
  if (settings.background === "transparent") parts.push(t("o.transparentShort"));
  return parts.join(" · ");
}

// ------------------------------------------------------------------ transparent output

// What GET /models says each model can do: "transparent output" on the Qwen-Image 2.1 profiles.
let capabilities = {};

async function loadModels() {
  const models = await api("models").catch(() => ({}));
  capabilities = Object.fromEntries(Object.entries(models || {}).map(([kind, m]) => [kind, m.capabilities || []]));
  syncTransparent();
}

function transparentOffered(formMode = mode()) {
  return (capabilities[MODEL_OF_MODE[formMode]] || []).includes("transparent output");
}

function syncTransparent() {
  $("#transparent-box").hidden = !transparentOffered();
}

function wire() {
  const box = $("#options-box");
  if (!box) return;
  translate(box);
  $("#size-hint").textContent = t("o.sizeHint", { min: MIN_SIDE, max: MAX_SIDE, step: SIDE_MULTIPLE });
  for (const id of ["size-width", "size-height"]) {
    const input = $(`#${id}`);
    Object.assign(input, { min: MIN_SIDE, max: MAX_SIDE, step: SIDE_MULTIPLE });
    input.addEventListener("input", () => input.removeAttribute("aria-invalid"));
  }
  $("#lora-add").addEventListener("click", addLora);
  $("#fast").addEventListener("change", syncFast);
  $("#custom-size").addEventListener("change", syncSize);
  // Choosing one of the seven ratios leaves the custom size (the API takes one or the other).
  $("#ratios").addEventListener("change", () => { $("#custom-size").checked = false; syncSize(); });
  // The form's mode (set by app.js) decides which adapters apply and whether a size is taken.
  new MutationObserver(() => { renderLoras(); syncSize(); })
    .observe($("#create-form"), { attributes: true, attributeFilter: ["data-mode"] });
  new MutationObserver(syncTransparent).observe($("#create-form"), { attributes: true, attributeFilter: ["data-mode"] });
  $("#lang").addEventListener("change", () => {
    renderLoras();
    $("#size-hint").textContent = t("o.sizeHint", { min: MIN_SIDE, max: MAX_SIDE, step: SIDE_MULTIPLE });
  });
  // The catalogue is read when the create view is shown to someone logged in (it needs a login).
  const view = $("#view-create");
  const load = () => { if (!view.hidden) { loadCatalogue(); loadModels(); } };
  new MutationObserver(load).observe(view, { attributes: true, attributeFilter: ["hidden"] });
  load();
  syncFast();
  syncSize();
  renderLoras();
  syncTransparent();
}

wire();
