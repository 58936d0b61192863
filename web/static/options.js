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
  },
  zh: {
    "o.loras": "LoRA 适配器（最多 3 个）", "o.add": "添加", "o.choose": "选择适配器…",
    "o.scale": "强度", "o.remove": "移除 {name}", "o.noLoras": "此模型暂无适配器：由管理员注册。",
    "o.full": "每张图最多 3 个适配器。",
    "o.fast": "快速模式", "o.fastHint": "Lightning：少量步数、关闭 CFG —— 步数与 CFG 设置不生效。",
    "o.custom": "自定义尺寸", "o.width": "宽", "o.height": "高",
    "o.sizeHint": "{min}–{max} 像素，{step} 的倍数",
    "o.sideInvalid": "{field}必须是 {step} 的倍数，范围 {min}–{max}（当前 {value}）。",
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
  select.replaceChildren(node("option", { value: "" }, t("o.choose")));
  for (const adapter of available) {
    if (chosen.some((c) => c.name === adapter.name)) continue;
    const option = node("option", { value: adapter.name }, adapter.name);
    const about = [adapter.description, adapter.trigger_words.length ? `⟨${adapter.trigger_words.join(", ")}⟩` : ""];
    if (about.some(Boolean)) option.title = about.filter(Boolean).join(" ");
    select.append(option);
  }
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
  return null;
}

/** The options as the page shows them beside a result (for a task card or the gallery). */
export function describeOptions(formMode = mode()) {
  const parts = [];
  if (SIZED_MODES.has(formMode) && $("#custom-size").checked) parts.push(`${$("#size-width").value}×${$("#size-height").value}`);
  for (const c of state.chosen[MODEL_OF_MODE[formMode]] || []) parts.push(`${c.name}:${formatScale(c.scale)}`);
  if ($("#fast").checked) parts.push(t("o.fast"));
  return parts.join(" · ");
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
  $("#lang").addEventListener("change", () => {
    renderLoras();
    $("#size-hint").textContent = t("o.sizeHint", { min: MIN_SIDE, max: MAX_SIDE, step: SIDE_MULTIPLE });
  });
  // The catalogue is read when the create view is shown to someone logged in (it needs a login).
  const view = $("#view-create");
  const load = () => { if (!view.hidden) loadCatalogue(); };
  new MutationObserver(load).observe(view, { attributes: true, attributeFilter: ["hidden"] });
  load();
  syncFast();
  syncSize();
  renderLoras();
}

wire();
