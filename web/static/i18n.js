// Chinese and English texts. The language follows the browser until the user picks one.
const TEXTS = {
  en: {
    skip: "Skip to content", language: "Language", logout: "Log out", close: "Close",
    "nav.create": "Create", "nav.gallery": "Gallery", "nav.history": "History", "nav.admin": "Admin",
    "quota.today": "Today", "quota.of": "{used} / {limit} today, resets {at}",
    "login.title": "Log in", "login.username": "Username", "login.password": "Password", "login.submit": "Log in",
    "login.register": "Register", "login.registered": "Account created — you are logged in.",
    "login.hint": "New here? Choose a username (3–50 characters) and a password (6 or more), then press Register.",
    "mode.t2i": "Text to image", "mode.edit": "Edit", "mode.batch": "Batch edit", "mode.i2i": "Image to image",
    "mask.title": "Region to repaint (optional)", "mask.canvas": "Mask: paint with the mouse or a finger",
    "mask.brush": "Brush", "mask.eraser": "Eraser", "mask.size": "Brush size", "mask.clear": "Clear",
    "mask.invert": "Invert",
    "mask.hint": "Paint over what should change; the rest stays. Nothing painted: the whole image is used.",
    "extend.title": "Extend the canvas (outpainting)", "extend.left": "Left", "extend.top": "Top",
    "extend.right": "Right", "extend.bottom": "Bottom", "extend.to": "Or to a ratio", "extend.none": "—",
    "extend.hint": "Pixels added on each side, or a ratio to extend to (centred); the new area is drawn to match.",
    "extend.notWithMask": "A painted mask and outpainting do not go together: clear the mask or the extension.",
    "f.strength": "Strength",
    "edit.drop": "Drop images here, or press to choose files", "edit.limit": "JPEG, PNG or WebP; at most {n}",
    "edit.remove": "Remove", "edit.need": "Add at least one image first.",
    "f.prompt": "Prompt", "f.prompts": "Edit prompts, one per line (at most 10)", "f.negative": "Negative prompt",
    "f.ratio": "Aspect ratio", "f.steps": "Steps", "f.cfg": "CFG scale", "f.guidance": "Guidance",
    "f.count": "Images", "f.seed": "Seed (−1 = random)", "f.random": "Random", "f.reuse": "Reuse last",
    "f.submit": "Generate", "f.needPrompt": "Write a prompt first.",
    "tasks.title": "Tasks", "tasks.empty": "Your tasks appear here while they run.", "tasks.cancel": "Cancel",
    "tasks.queued": "In queue, position {n}", "tasks.running": "Step {step} of {total}", "tasks.finishing": "Finishing: decoding and saving the image…",
    "tasks.done": "Done in {s} s, seed {seed}", "tasks.starting": "Waiting to start",
    "st.pending": "pending", "st.running": "running", "st.completed": "completed", "st.failed": "failed",
    "st.cancelled": "cancelled",
    "type.text_to_image": "text to image", "type.image_edit": "edit", "type.batch_edit": "batch edit", "type.image_to_image": "image to image",
    "gallery.title": "Gallery", "gallery.empty": "Finished images appear here.",
    "g.png": "PNG", "g.zip": "ZIP", "g.useEdit": "Use as edit input", "g.again": "Same settings again",
    "g.meta": "seed {seed} · {params}", "g.added": "Added as edit input.",
    "g.zipN": "ZIP ({n} images)", "v.open": "Open image {n} of {count}", "v.prev": "Previous image",
    "v.next": "Next image", "v.download": "Download PNG", "v.position": "{at} / {of} · image {n} of {count}",
    "tasks.cancelled": "Cancelled.", "edit.promptHint": "Describe the change, e.g. “make it night, with lit windows”",
    "h.image": "Image", "docs": "API docs", "v.seed": "Seed",
    "admin.defaultPassword": "The administrator “{name}” still has the default password. Change it now (log in as {name}, POST /auth/change-password) or set ADMIN_PASSWORD before the first start.",
    "history.title": "History", "h.status": "Status", "h.type": "Type", "h.any": "Any", "h.from": "From",
    "h.to": "To", "h.user": "User id", "h.all": "All users", "h.apply": "Apply", "h.created": "Created",
    "h.seconds": "Seconds", "h.actions": "Actions", "h.prev": "Previous", "h.next": "Next",
    "h.page": "Page {page} of {pages} · {total} tasks", "h.show": "Show", "h.none": "No tasks match.",
    "s.total_tasks": "Tasks", "s.completed_tasks": "Completed", "s.failed_tasks": "Failed",
    "s.pending_tasks": "Waiting", "s.text_to_image_count": "Text to image", "s.image_edit_count": "Edits",
    "s.batch_edit_count": "Batch edits", "s.image_to_image_count": "Image to image", "s.avg_execution_time": "Average seconds",
    "s.total_execution_time": "Total seconds", "s.today_tasks": "Today", "s.active_users": "Active users",
    "s.running_tasks": "Running", "s.cancelled_tasks": "Cancelled",
    "admin.title": "Administration", "admin.stats": "Statistics (all users)", "admin.users": "Users",
    "admin.active": "Active", "admin.admin": "Admin", "admin.quota": "Daily / monthly limit",
    "admin.cleanup": "Clean-up", "admin.hours": "Leave memory after (hours)",
    "admin.days": "Delete records older than (days)", "admin.run": "Clean up", "admin.enable": "Enable",
    "admin.disable": "Disable", "admin.makeAdmin": "Make admin", "admin.dropAdmin": "Remove admin",
    "admin.delete": "Delete", "admin.save": "Save limits", "admin.confirmDelete": "Delete user {name}?",
    "admin.saved": "Limits saved.", "yes": "yes", "no": "no", "default": "default", "admin.defaultN": "default: {n}",
    "admin.search": "Name or e-mail contains", "admin.find": "Find", "admin.none": "No users match.",
    "admin.page": "Page {page} of {pages} · {total} users",
  },
  zh: {
    skip: "跳到内容", language: "语言", logout: "退出登录", close: "关闭",
    "nav.create": "创作", "nav.gallery": "作品", "nav.history": "历史", "nav.admin": "管理",
    "quota.today": "今日", "quota.of": "今日 {used} / {limit}，{at} 重置",
    "login.title": "登录", "login.username": "用户名", "login.password": "密码", "login.submit": "登录",
    "login.register": "注册", "login.registered": "账号已创建，已登录。",
    "login.hint": "第一次使用？填写用户名（3–50 个字符）和密码（至少 6 位），然后点“注册”。",
    "mode.t2i": "文生图", "mode.edit": "图像编辑", "mode.batch": "批量编辑", "mode.i2i": "图生图",
    "mask.title": "重绘区域（可选）", "mask.canvas": "蒙版：用鼠标或手指涂抹",
    "mask.brush": "画笔", "mask.eraser": "橡皮擦", "mask.size": "笔刷大小", "mask.clear": "清除",
    "mask.invert": "反选",
    "mask.hint": "涂抹需要改变的地方，其余保持不变。不涂抹则处理整张图片。",
    "extend.title": "扩展画布（外扩绘制）", "extend.left": "左", "extend.top": "上",
    "extend.right": "右", "extend.bottom": "下", "extend.to": "或扩展到宽高比", "extend.none": "—",
    "extend.hint": "每边增加的像素，或要扩展到的宽高比（居中）；新区域会自动补全。",
    "extend.notWithMask": "涂抹的蒙版和扩展画布不能同时使用：请清除蒙版或扩展设置。",
    "f.strength": "重绘强度",
    "edit.drop": "把图片拖到这里，或点击选择文件", "edit.limit": "JPEG、PNG 或 WebP，最多 {n} 张",
    "edit.remove": "移除", "edit.need": "请先添加至少一张图片。",
    "f.prompt": "提示词", "f.prompts": "编辑提示词，每行一条（最多 10 条）", "f.negative": "反向提示词",
    "f.ratio": "宽高比", "f.steps": "步数", "f.cfg": "CFG 强度", "f.guidance": "引导强度",
    "f.count": "张数", "f.seed": "种子（−1 为随机）", "f.random": "随机", "f.reuse": "沿用上次",
    "f.submit": "生成", "f.needPrompt": "请先填写提示词。",
    "tasks.title": "任务", "tasks.empty": "运行中的任务会显示在这里。", "tasks.cancel": "取消",
    "tasks.queued": "排队中，第 {n} 位", "tasks.running": "第 {step} / {total} 步", "tasks.finishing": "即将完成：正在解码并保存图片…",
    "tasks.done": "用时 {s} 秒，种子 {seed}", "tasks.starting": "等待开始",
    "st.pending": "排队中", "st.running": "运行中", "st.completed": "已完成", "st.failed": "失败",
    "st.cancelled": "已取消",
    "type.text_to_image": "文生图", "type.image_edit": "图像编辑", "type.batch_edit": "批量编辑", "type.image_to_image": "图生图",
    "gallery.title": "作品", "gallery.empty": "完成的图片会显示在这里。",
    "g.png": "PNG", "g.zip": "ZIP", "g.useEdit": "用作编辑输入", "g.again": "相同参数再来一次",
    "g.meta": "种子 {seed} · {params}", "g.added": "已加入编辑输入。",
    "g.zipN": "ZIP（{n} 张）", "v.open": "查看第 {n} / {count} 张", "v.prev": "上一张", "v.next": "下一张",
    "v.download": "下载 PNG", "v.position": "{at} / {of} · 本任务第 {n} / {count} 张",
    "tasks.cancelled": "已取消。", "edit.promptHint": "描述要做的修改，例如“改成夜晚，窗户亮着灯”",
    "h.image": "图片", "docs": "API 文档", "v.seed": "种子",
    "admin.defaultPassword": "管理员“{name}”仍在使用默认密码。请立即修改（以 {name} 登录后调用 POST /auth/change-password），或在首次启动前设置 ADMIN_PASSWORD。",
    "history.title": "历史", "h.status": "状态", "h.type": "类型", "h.any": "全部", "h.from": "起始日期",
    "h.to": "结束日期", "h.user": "用户 ID", "h.all": "所有用户", "h.apply": "筛选", "h.created": "创建时间",
    "h.seconds": "耗时（秒）", "h.actions": "操作", "h.prev": "上一页", "h.next": "下一页",
    "h.page": "第 {page} / {pages} 页 · 共 {total} 个任务", "h.show": "查看", "h.none": "没有符合条件的任务。",
    "s.total_tasks": "任务总数", "s.completed_tasks": "已完成", "s.failed_tasks": "失败",
    "s.pending_tasks": "等待中", "s.text_to_image_count": "文生图", "s.image_edit_count": "图像编辑",
    "s.batch_edit_count": "批量编辑", "s.image_to_image_count": "图生图", "s.avg_execution_time": "平均耗时（秒）",
    "s.total_execution_time": "总耗时（秒）", "s.today_tasks": "今日任务", "s.active_users": "活跃用户",
    "s.running_tasks": "运行中", "s.cancelled_tasks": "已取消",
    "admin.title": "管理", "admin.stats": "全局统计", "admin.users": "用户",
    "admin.active": "启用", "admin.admin": "管理员", "admin.quota": "每日 / 每月配额",
    "admin.cleanup": "清理", "admin.hours": "内存中保留（小时）",
    "admin.days": "删除早于（天）的记录", "admin.run": "开始清理", "admin.enable": "启用",
    "admin.disable": "禁用", "admin.makeAdmin": "设为管理员", "admin.dropAdmin": "取消管理员",
    "admin.delete": "删除", "admin.save": "保存配额", "admin.confirmDelete": "确定删除用户 {name}？",
    "admin.saved": "配额已保存。", "yes": "是", "no": "否", "default": "默认", "admin.defaultN": "默认 {n}",
    "admin.search": "用户名或邮箱包含", "admin.find": "查找", "admin.none": "没有符合条件的用户。",
    "admin.page": "第 {page} / {pages} 页 · 共 {total} 个用户",
  },
};

const STORAGE_KEY = "qwen-image.lang";  // a preference, not a secret

function browserLanguage() {
  const wanted = navigator.languages && navigator.languages.length ? navigator.languages : [navigator.language || "en"];
  for (const tag of wanted) {
    const lang = String(tag).toLowerCase();
    if (lang.startsWith("zh")) return "zh";
    if (lang.startsWith("en")) return "en";
  }
  return "en";
}

let current = localStorage.getItem(STORAGE_KEY) || browserLanguage();
if (!TEXTS[current]) current = "en";

export function language() { return current; }

/** The Accept-Language the API gets: its error details then come in the page's language. */
export function acceptLanguage() { return current === "zh" ? "zh-CN,zh;q=0.9" : "en"; }

/** A text by key, with {name} placeholders filled in. */
export function t(key, values = {}) {
  const text = TEXTS[current][key] ?? TEXTS.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => (name in values ? String(values[name]) : `{${name}}`));
}

/** Writes every [data-i18n] element's text (textContent only: texts never carry markup). */
export function translate(root = document) {
  document.documentElement.lang = current === "zh" ? "zh-CN" : "en";
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll("[data-i18n-label]")) el.setAttribute("aria-label", t(el.dataset.i18nLabel));
}

export function setLanguage(lang) {
  if (!TEXTS[lang]) return;
  current = lang;
  localStorage.setItem(STORAGE_KEY, lang);
  translate();
}

/** Adds texts of a part of the page that keeps its own (options.js, account.js), per language. */
export function extendTexts(extra) {
  for (const [lang, texts] of Object.entries(extra)) if (TEXTS[lang]) Object.assign(TEXTS[lang], texts);
}
