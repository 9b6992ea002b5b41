// The page of `imagegen serve`: four tabs over one JSON API (imagegen/serve/app.py). A request
// becomes a job on the server; its server-sent events carry the canvas as it is written.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];
const CLIENT = sessionStorage.imagegenClient ||
  (sessionStorage.imagegenClient = Array.from(crypto.getRandomValues(new Uint8Array(12)),
                                              b => b.toString(16).padStart(2, "0")).join(""));
let INFO = null;

async function api(path, body) {
  const response = await fetch(path, body === undefined ? {} : {
    method: "POST", headers: {"Content-Type": "application/json", "X-Client": CLIENT},
    body: JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({error: `the server answered ${response.status}`}));
  if (!response.ok) throw new Error(data.error || `the server answered ${response.status}`);
  return data;
}

const model = key => INFO.checkpoints.find(c => c.key === key);
const readFile = file => new Promise((resolve, reject) => {
  const reader = new FileReader();
  reader.onload = () => resolve(reader.result);
  reader.onerror = () => reject(new Error(`cannot read ${file.name}`));
  reader.readAsDataURL(file);
});
const loadImage = src => new Promise((resolve, reject) => {
  const img = new Image();
  img.onload = () => resolve(img);
  img.onerror = () => reject(new Error("the picture did not load"));
  img.src = src;
});

// --- a job: submit, watch its events, stop ---------------------------------------------------------

class JobView {
  constructor(el, stopButton) {
    el.append($("#job-view").content.cloneNode(true));
    Object.assign(this, {el, stopButton, job: null, source: null});
    stopButton?.addEventListener("click", () => this.stop());
  }

  set(state, text) {
    this.el.dataset.state = state;
    $(".state", this.el).textContent = text;
  }

  error(message) {
    const box = $(".error", this.el);
    box.textContent = message || "";
    box.hidden = !message;
    if (message) this.set("failed", "Not done.");
  }

  // Runs `body` as a job; resolves with its last snapshot (state done, stopped or failed).
  run(body, {showCanvas = true} = {}) {
    this.error("");
    if (showCanvas) {
      $(".downloads", this.el).replaceChildren();
      $(".summary", this.el).textContent = "";
      $(".command", this.el).hidden = true;
    }
    this.set("sending", "Sending…");
    const started = performance.now();
    return api("/api/jobs", {...body}).then(job => new Promise(resolve => {
      this.job = job;
      this.el.dataset.jobId = job.id;
      if (this.stopButton) this.stopButton.disabled = false;
      const source = this.source = new EventSource(`/api/jobs/${job.id}/events`);
      const timer = setInterval(() => {
        $(".time", this.el).textContent = `${((performance.now() - started) / 1000).toFixed(1)} s`;
      }, 100);
      source.onmessage = message => {
        const snap = JSON.parse(message.data);
        this.job = snap;
        if (snap.frame && showCanvas) $(".canvas img", this.el).src = snap.frame;
        this.progress(snap);
        if (["done", "stopped", "failed"].includes(snap.state)) {
          source.close();
          clearInterval(timer);
          if (this.stopButton) this.stopButton.disabled = true;
          if (snap.state === "done" && showCanvas) this.finish(snap);
          if (snap.state === "failed") this.error(snap.error);
          resolve(snap);
        }
      };
      source.onerror = () => {
        if (source.readyState === EventSource.CLOSED) return;
        source.close();
        clearInterval(timer);
        if (this.stopButton) this.stopButton.disabled = true;
        this.error("lost the connection to the server");
        resolve({state: "failed"});
      };
    })).catch(e => {
      this.error(e.message);
      return {state: "failed", error: e.message};
    });
  }

  progress(snap) {
    const share = snap.total ? snap.done / snap.total : 0;
    $(".bar div", this.el).style.width = `${(100 * (snap.state === "done" ? 1 : share)).toFixed(1)}%`;
    const texts = {
      queued: `Waiting: ${snap.position > 1 ? `${snap.position - 1} request(s) ahead` : "next in line"}.`,
      running: snap.total ? `Writing sub-pixel ${snap.done} of ${snap.total}…` : "Working…",
      done: "Done.",
      stopped: `Stopped at sub-pixel ${snap.done} of ${snap.total}.`,
      failed: "Not done.",
    };
    this.set(snap.state, texts[snap.state] || snap.state);
  }

  finish(snap) {
    if (snap.urls.grid) $(".canvas img", this.el).src = snap.urls.grid;
    $(".summary", this.el).textContent = snap.summary;
    const links = snap.pictures.map(name => {
      const a = document.createElement("a");
      a.href = snap.urls[name];
      a.download = `imagegen-${snap.kind}-${name}.png`;
      a.textContent = /^\d+$/.test(name) ? `${+name + 1}.png` : `${name}.png`;
      a.dataset.picture = name;
      return a;
    });
    if (links.length) {
      const label = document.createElement("span");
      label.textContent = "Download PNG:";
      $(".downloads", this.el).replaceChildren(label, ...links);
    }
    $(".command code", this.el).textContent = snap.command;
    $(".command", this.el).hidden = !snap.command;
  }

  stop() {
    if (!this.job) return;
    this.set("stopping", "Stopping…");
    api(`/api/jobs/${this.job.id}/stop`, {}).catch(e => this.error(e.message));
  }
}

// --- an image to work on: an upload or a test digit, as the checkpoint reads it ----------------------

class Picker {
  constructor(section, onImage, low = false) {
    const box = $("fieldset.picker", section);
    box.append($("#picker").content.cloneNode(true));
    Object.assign(this, {section, onImage, low, source: null, image: null});
    for (const name of INFO.digits) {
      const button = document.createElement("button");
      button.type = "button";
      button.title = name;
      button.dataset.digit = name;
      const img = document.createElement("img");
      img.src = `/static/digits/${name}.png`;
      img.alt = name;
      button.append(img);
      button.addEventListener("click", () => this.choose({digit: name}, button));
      $(".digits", box).append(button);
    }
    $("input[type=file]", box).addEventListener("change", async event => {
      const file = event.target.files[0];
      if (file) this.choose({image: await readFile(file), filename: file.name}, null);
    });
    $("input[name=resize]", box).addEventListener("change", () => this.refresh());
  }

  fields() {
    return {...this.source, resize: $("input[name=resize]", this.section).checked};
  }

  choose(source, button) {
    $$(".digits button", this.section).forEach(b => b.classList.toggle("chosen", b === button));
    if (button) $("input[type=file]", this.section).value = "";
    this.source = source;
    return this.refresh();
  }

  // Asks the server to read the image at the checkpoint's size (the CLI's reader and checks).
  async refresh() {
    if (!this.source) return;
    const view = this.section.view;
    view.error("");
    try {
      const checkpoint = $("select[name=checkpoint]", this.section).value;
      const read = await api("/api/preview", {...this.fields(), checkpoint, low: this.low});
      this.image = await loadImage(read.image);
      this.name = read.name;
      view.set("ready", `Read ${read.name}: ${read.shape[2]}×${read.shape[1]} pixels, ${read.shape[0]} channel(s).`);
      this.onImage(this.image);
    } catch (e) {
      this.image = null;
      view.error(e.message);
      this.onImage(null);
    }
  }
}

function drawPixels(canvas, img) {
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.fillStyle = "#e6e8ee";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  if (img) ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
  return ctx;
}

// --- the tabs --------------------------------------------------------------------------------------

function fillCheckpoints(section, onChange) {
  const select = $("select[name=checkpoint]", section);
  const which = select.dataset.models;
  for (const c of INFO.checkpoints) {
    if (which !== "all" && (which === "upscale") !== Boolean(c.upscale_factor)) continue;
    const option = document.createElement("option");
    option.value = c.key;
    option.textContent = c.name;
    select.append(option);
  }
  const about = document.createElement("p");
  about.className = "model-info";
  select.parentElement.after(about);
  const update = () => {
    const c = model(select.value);
    if (!c) return;
    const [C, H, W] = c.shape;
    about.textContent = [c.family, `${W}×${H} ${C === 3 ? "RGB" : "grey"}`, `${c.levels} levels`,
      c.upscale_factor ? `from ${c.lowres_size[1]}×${c.lowres_size[0]}` : null,
      c.num_classes ? `${c.num_classes} classes` : null, c.attention ? "attention maps" : null,
    ].filter(Boolean).join(" · ");
    section.querySelectorAll(".needs-label").forEach(el => { el.hidden = !c.num_classes; });
    section.querySelectorAll(".needs-label input").forEach(el => { el.max = c.num_classes - 1; });
    section.querySelectorAll(".needs-channels").forEach(el => { el.hidden = c.shape[0] === 1; });
    $$("input[name=num]", section).forEach(el => { el.max = INFO.limits.max_images; });
    onChange?.(c);
  };
  select.addEventListener("change", update);
  update();
  if (!select.options.length) {
    section.view.error(`no ${which === "upscale" ? "super-resolution " : ""}checkpoint is served: ` +
                       "start imagegen serve with --checkpoint");
    $$("button.primary", section).forEach(b => { b.disabled = true; });
  }
}

function formFields(section, names) {
  const fields = {kind: section.dataset.kind};
  for (const name of names) {
    const el = $(`[name=${name}]`, section);
    if (el && !el.closest("[hidden]")) fields[name] = el.value === "" ? null : el.value;
  }
  return fields;
}

function samplingTab(section, extra) {
  const form = $("form", section);
  form.addEventListener("submit", async event => {
    event.preventDefault();
    const more = extra ? extra() : {};
    if (more === null) return;
    const fields = {...formFields(section, ["checkpoint", "num", "temperature", "seed", "label"]), ...more};
    $("button.primary", section).disabled = true;
    await section.view.run(fields);
    $("button.primary", section).disabled = false;
  });
}

function setupComplete(section) {
  const canvas = $("canvas", section);
  const slider = $("input[name=keep_rows]", section);
  let image = null, shape = [1, 28, 28], mask = new Uint8Array(28 * 28), drawn = false;
  const keepRows = rows => {
    mask = new Uint8Array(shape[1] * shape[2]);
    mask.fill(1, 0, rows * shape[2]);
    drawn = false;
    render();
  };
  const render = () => {
    const ctx = drawPixels(canvas, image);
    const [, H, W] = shape, sx = canvas.width / W, sy = canvas.height / H;
    ctx.fillStyle = "rgba(37, 99, 235, 0.7)";
    for (let i = 0; i < H; i++) for (let j = 0; j < W; j++) {
      if (!mask[i * W + j]) ctx.fillRect(j * sx, i * sy, sx, sy);
    }
  };
  slider.addEventListener("input", () => {
    $("output", slider.parentElement).textContent = slider.value;
    keepRows(+slider.value);
  });
  // A 3x3 brush along the pointer's path (moves can jump several pixels between events).
  let painting = null, last = null;
  const brush = (i, j) => {
    const [, H, W] = shape;
    for (let di = -1; di <= 1; di++) for (let dj = -1; dj <= 1; dj++) {
      const y = i + di, x = j + dj;
      if (y >= 0 && y < H && x >= 0 && x < W) mask[y * W + x] = painting;
    }
  };
  const paint = event => {
    const rect = canvas.getBoundingClientRect(), [, H, W] = shape;
    const i = Math.floor((event.clientY - rect.top) / rect.height * H);
    const j = Math.floor((event.clientX - rect.left) / rect.width * W);
    const from = last || [i, j], steps = Math.max(Math.abs(i - from[0]), Math.abs(j - from[1]), 1);
    for (let s = 0; s <= steps; s++) {
      brush(Math.round(from[0] + (i - from[0]) * s / steps), Math.round(from[1] + (j - from[1]) * s / steps));
    }
    last = [i, j];
    drawn = true;
    render();
  };
  canvas.addEventListener("contextmenu", event => event.preventDefault());
  canvas.addEventListener("pointerdown", event => {
    painting = event.button === 2 || event.shiftKey ? 0 : 1;
    last = null;
    canvas.setPointerCapture(event.pointerId);
    paint(event);
  });
  canvas.addEventListener("pointermove", event => { if (painting !== null) paint(event); });
  canvas.addEventListener("pointerup", () => { painting = last = null; });
  const picker = new Picker(section, img => { image = img; render(); });
  fillCheckpoints(section, c => {
    shape = c.shape;
    slider.max = c.shape[1];
    if (+slider.value > c.shape[1]) slider.value = Math.floor(c.shape[1] / 2);
    $("output", slider.parentElement).textContent = slider.value;
    keepRows(+slider.value);
    picker.refresh();
  });
  samplingTab(section, () => {
    if (!picker.source) {
      section.view.error("choose an image first: upload one or pick a test digit");
      return null;
    }
    return {...picker.fields(), ...(drawn ? {mask: Array.from(mask).join("")} : {keep_rows: slider.value})};
  });
  section.picker = picker;
}

function setupUpscale(section) {
  const canvas = $("canvas", section);
  const picker = new Picker(section, img => drawPixels(canvas, img), true);
  fillCheckpoints(section, () => picker.refresh());
  drawPixels(canvas, null);
  samplingTab(section, () => {
    if (!picker.source) {
      section.view.error("choose an image first: upload one or pick a test digit");
      return null;
    }
    return picker.fields();
  });
  section.picker = picker;
}

function setupExplain(section) {
  const canvas = $("canvas", section);
  const figures = $(".figures", section);
  let image = null, clicked = null;
  const render = () => {
    const ctx = drawPixels(canvas, image);
    if (clicked && image) {
      const c = model($("select[name=checkpoint]", section).value), [, H, W] = c.shape;
      ctx.strokeStyle = "#ef4444";
      ctx.lineWidth = 3;
      ctx.strokeRect(clicked.col * canvas.width / W, clicked.row * canvas.height / H,
                     canvas.width / W, canvas.height / H);
    }
  };
  const figure = (name, caption) => {
    let fig = $(`figure[data-what="${name}"]`, figures);
    if (!fig) {
      fig = document.createElement("figure");
      fig.dataset.what = name;
      fig.innerHTML = "<figcaption><span></span> <a>Download PNG</a></figcaption><img alt=''>";
      figures.append(fig);
    }
    $("span", fig).textContent = caption;
    return fig;
  };
  // Explains `what` (one job at a time, as the server allows one per page) into its figure.
  let busy = Promise.resolve();
  const explain = (what, caption, extra = {}) => busy = busy.then(async () => {
    if (!picker.source) return;
    const fields = {...formFields(section, ["checkpoint", "label"]), ...picker.fields(), what, ...extra};
    const snap = await section.view.run(fields, {showCanvas: false});
    if (snap.state !== "done") return;
    const fig = figure(what, what === "nll" ? `${caption}: ${snap.summary}` : caption);
    $("img", fig).src = snap.urls[what];
    Object.assign($("a", fig), {href: snap.urls[what], download: `imagegen-explain-${what}.png`});
    section.view.set("done", "Done.");
  });
  const explainPixel = () => {
    if (!clicked) return;
    const c = model($("select[name=checkpoint]", section).value);
    const at = {...clicked, channel: c.shape[0] > 1 ? $("select[name=channel]", section).value : 0};
    explain("receptive-field", `Receptive field of row ${at.row}, column ${at.col}`, at);
    if (c.attention) explain("attention", `Attention of row ${at.row}, column ${at.col} (mean of the heads)`, at);
    else $(`figure[data-what="attention"]`, figures)?.remove();
  };
  canvas.addEventListener("click", event => {
    if (!image) return;
    const c = model($("select[name=checkpoint]", section).value), [, H, W] = c.shape;
    const rect = canvas.getBoundingClientRect();
    clicked = {row: Math.floor((event.clientY - rect.top) / rect.height * H),
               col: Math.floor((event.clientX - rect.left) / rect.width * W)};
    render();
    explainPixel();
  });
  const picker = new Picker(section, img => {
    image = img;
    render();
    figures.replaceChildren();
    if (img) {
      explain("nll", "Bits of each sub-pixel");
      explainPixel();
    }
  });
  fillCheckpoints(section, () => picker.refresh());
  $("input[name=label]", section).addEventListener("change", () => picker.refresh());
  $("form", section).addEventListener("submit", event => event.preventDefault());
  drawPixels(canvas, null);
  section.picker = picker;
}

function showTab() {
  const name = (location.hash || "#sample").slice(1);
  $$(".tab").forEach(tab => { tab.hidden = tab.id !== name; });
  $$("nav a").forEach(a => a.classList.toggle("active", a.dataset.tab === name));
}

async function start() {
  INFO = await api("/api/info");
  for (const section of $$(".tab")) section.view = new JobView($("[data-job]", section), $("button.stop", section));
  fillCheckpoints($("#sample"));
  samplingTab($("#sample"));
  setupComplete($("#complete"));
  setupUpscale($("#upscale"));
  setupExplain($("#explain"));
  window.addEventListener("hashchange", showTab);
  showTab();
  document.body.dataset.ready = "1";
}

start().catch(e => {
  document.body.dataset.ready = "failed";
  document.querySelector("main").prepend(Object.assign(document.createElement("p"),
                                                       {className: "error", textContent: e.message}));
});
