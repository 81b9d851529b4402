// fastmlp playground: the page. Plain JavaScript, no libraries; talks to the server's JSON API.
//
// Notes
// 1. The server's snapshot is the one source of truth: every control is set from
//    snapshot.config when a snapshot is drawn; a change sends the whole settings object to
//    /config and draws the answer (a refused setting comes back as a 400 whose message is
//    shown, and the controls return to the server's settings).
// 2. Snapshots carry a version; an answer older than the one drawn is ignored, so a poll that
//    crosses a settings change cannot undo it.
// 3. Images are int8 codes q (value = mid + half * q / 127); colour goes from orange (q = -127)
//    through light grey (0) to blue (q = 127). Class 1 is blue, class 0 orange.
// 4. Values shown on hover over the heat map are computed here by the same forward pass as the
//    server's network (features, layers, activations, skips), from the weights of the snapshot.
"use strict";

const FEATURES = ["x1", "x2", "x1^2", "x2^2", "x1*x2", "sin x1", "sin x2"];
const POLL_PLAYING_MS = 100;
const POLL_IDLE_MS = 1000;
const NEURON = 40;          // neuron box size in px
const ORANGE = [245, 147, 34];
const GREY = [232, 234, 235];
const BLUE = [8, 119, 189];

let sessionId = null;
let snap = null;            // the last snapshot drawn
let pollTimer = null;
let busy = 0;               // requests in flight that change settings
let lastAction = 0;         // time of the last request that changed something (ms)

const $ = (id) => document.getElementById(id);

// ------------------------------------------------------------------ talking to the server

async function api(method, path, body) {
  const opts = { method, headers: {} };
  if (body !== undefined) {
    opts.body = JSON.stringify(body);
    opts.headers["Content-Type"] = "application/json";
  }
  const res = await fetch(path, opts);
  let data = null;
  try { data = await res.json(); } catch (e) { data = { error: "unreadable answer" }; }
  if (!res.ok) {
    const err = new Error(data && data.error ? data.error : `HTTP ${res.status}`);
    err.status = res.status;
    throw err;
  }
  return data;
}

async function newSession(config) {
  const s = await api("POST", "/api/session", config || {});
  sessionId = s.session;
  draw(s, true);
}

// Requests that change the session run one after another, in the order of the user's clicks,
// and each change builds on the settings of the one before (draft), not on the last snapshot,
// so quick clicks are not lost.
let queue = Promise.resolve();
let draft = null;

function act(action, body) {
  busy++;
  document.body.dataset.busy = String(busy);
  const job = queue.then(() => send(action, body));
  queue = job.catch(() => {});
  return job;
}

async function send(action, body) {
  lastAction = Date.now();
  try {
    const s = await api("POST", `/api/session/${sessionId}/${action}`, body);
    setStatus("");
    draw(s, true);
    clearTimeout(pollTimer);
    pollTimer = setTimeout(poll, POLL_PLAYING_MS);
  } catch (e) {
    draft = null;
    if (e.status === 404) {
      await newSession(snap ? snap.config : {});
      setStatus("the session had expired; a new one was started");
    } else {
      setStatus(e.message);
      if (snap) syncControls(snap.config);
    }
  } finally {
    busy--;
    document.body.dataset.busy = String(busy);
    if (busy === 0) draft = null;
  }
}

function settings() { return draft || snap.config; }

function changeConfig(patch) {
  draft = Object.assign({}, settings(), patch);
  return act("config", draft);
}

async function poll() {
  clearTimeout(pollTimer);
  if (sessionId && !busy) {
    try {
      const s = await api("GET", `/api/session/${sessionId}`);
      draw(s, false);
    } catch (e) {
      if (e.status === 404) {
        await newSession(snap ? snap.config : {});
        setStatus("the session had expired; a new one was started");
      }
    }
  }
  // fast while training, and for a moment after a click (a step is drawn when it is done)
  const recent = Date.now() - lastAction < 2000;
  const wait = (snap && snap.playing) || recent ? POLL_PLAYING_MS : POLL_IDLE_MS;
  pollTimer = setTimeout(poll, wait);
}

function setStatus(text) { $("status").textContent = text || ""; }

// ------------------------------------------------------------------ colours and images

function colour(t) {
  // t in [-1, 1] -> [r, g, b]
  const c = t < 0 ? ORANGE : BLUE;
  const a = Math.min(1, Math.abs(t));
  return [0, 1, 2].map((k) => Math.round(GREY[k] + (c[k] - GREY[k]) * a));
}

function decodeCodes(b64) {
  const bin = atob(b64);
  const q = new Int8Array(bin.length);
  for (let i = 0; i < bin.length; i++) q[i] = (bin.charCodeAt(i) << 24) >> 24;
  return q;
}

function imageCanvas(image, n, lighten) {
  const q = decodeCodes(image.q);
  const c = document.createElement("canvas");
  c.width = n;
  c.height = n;
  const ctx = c.getContext("2d");
  const img = ctx.createImageData(n, n);
  for (let i = 0; i < n * n; i++) {
    let rgb = colour(q[i] / 127);
    if (lighten) rgb = rgb.map((v) => Math.round(v + (255 - v) * lighten));
    img.data[4 * i] = rgb[0];
    img.data[4 * i + 1] = rgb[1];
    img.data[4 * i + 2] = rgb[2];
    img.data[4 * i + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
  return c;
}

function paintScaled(target, source) {
  const ctx = target.getContext("2d");
  ctx.imageSmoothingEnabled = true;
  ctx.clearRect(0, 0, target.width, target.height);
  ctx.drawImage(source, 0, 0, target.width, target.height);
}

// ------------------------------------------------------------------ the network's forward pass

const ACT = {
  relu: (z) => (z > 0 ? z : 0),
  tanh: Math.tanh,
  sigmoid: (z) => (z >= 0 ? 1 / (1 + Math.exp(-z)) : Math.exp(z) / (1 + Math.exp(z))),
  identity: (z) => z,
};

function featureValues(x1, x2, names) {
  const table = {
    "x1": x1, "x2": x2, "x1^2": x1 * x1, "x2^2": x2 * x2, "x1*x2": x1 * x2,
    "sin x1": Math.sin(x1), "sin x2": Math.sin(x2),
  };
  return names.map((n) => table[n]);
}

function forwardPoint(s, x1, x2) {
  let a = featureValues(x1, x2, s.features);
  const L = s.weights.length;
  for (let l = 0; l < L; l++) {
    const W = s.weights[l], b = s.biases[l];
    const z = b.map((bj, j) => a.reduce((acc, ai, i) => acc + ai * W[i][j], bj));
    if (l === L - 1) {
      return s.output === "sigmoid" ? ACT.sigmoid(z[0]) : z[0];
    }
    const f = ACT[s.activation];
    if (s.skip === "residual") a = z.map((zj, j) => a[j] + f(zj));
    else if (s.skip === "preact") a = z.map((zj) => zj + f(zj));
    else a = z.map(f);
  }
  return NaN;
}

// ------------------------------------------------------------------ drawing

function fmt(v, digits) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  return Number(v.toPrecision(digits || 4)).toString();
}

function draw(s, force) {
  if (!force && snap && s.version <= snap.version && s.session === snap.session) return;
  const structural = !snap || force || snap.session !== s.session ||
    JSON.stringify(snap.layers) !== JSON.stringify(s.layers) ||
    JSON.stringify(snap.features) !== JSON.stringify(s.features) || snap.mode !== s.mode;
  snap = s;
  document.body.dataset.version = String(s.version);
  document.body.dataset.mode = s.mode;
  if (!draft) syncControls(s.config);
  $("epoch").textContent = s.epoch;
  $("stepcount").textContent = s.step;
  const play = $("play");
  play.textContent = s.playing ? "❚❚ Pause" : "▶ Play";
  play.classList.toggle("playing", s.playing);
  const lecture = s.mode === "lecture";
  play.disabled = lecture;
  $("step").disabled = lecture;
  if (s.error) setStatus(s.error);
  else if (lecture) {
    setStatus("The lecture's example, not trained: Reset or any setting trains again");
  }
  $("n-layers").textContent = s.layers.length - 2;
  $("train-loss").textContent = s.loss ? fmt(s.loss.train, 4) : "–";
  $("test-loss").textContent = s.loss ? fmt(s.loss.test, 4) : "–";
  drawNetwork(s, structural);
  drawHeatmap(s);
  drawLossCurve(s);
  drawGradNorms(s);
  $("legend").textContent = lecture
    ? "The lecture's network g = -3 (s1 + s2), s1 = σ(5 x1 - 5 x2 + 1), " +
      "s2 = σ(-5 x1 + 5 x2 + 1); " +
      `output from ${fmt(s.heatmap.lo)} (orange) to ${fmt(s.heatmap.hi)} (blue), not trained.`
    : "Colour: predicted probability of class 1 (blue) against class 0 (orange).";
}

function syncControls(cfg) {
  const set = (id, v) => {
    const el = $(id);
    if (document.activeElement === el && el.tagName === "INPUT" && el.type === "number") return;
    if (el.type === "checkbox") el.checked = !!v;
    else if (String(el.value) !== String(v)) el.value = String(v);
  };
  set("lr", cfg.lr);
  set("activation", cfg.activation);
  set("init", cfg.init);
  set("skip", cfg.skip);
  set("batch", cfg.batch_size);
  set("clip", cfg.clip);
  set("tau", cfg.tau);
  set("l2", cfg.l2);
  set("dataset", cfg.dataset);
  set("noise", cfg.noise);
  set("ratio", Math.round(cfg.train_ratio * 100));
  set("seed", cfg.seed);
  $("noise-value").textContent = cfg.noise;
  $("ratio-value").textContent = `${Math.round(cfg.train_ratio * 100)}%`;
}

function columnX(c, nCols, width) {
  const left = 90, right = width - 70;
  return nCols === 1 ? left : left + (c * (right - left)) / (nCols - 1);
}

function layout(s, width, height) {
  // positions of every neuron box: columns = inputs (all 7 features), hidden..., output
  const lecture = s.mode === "lecture";
  const inputs = lecture ? s.features : FEATURES;
  const widths = [inputs.length].concat(s.layers.slice(1));
  const nCols = widths.length;
  const cols = widths.map((n, c) => {
    const x = columnX(c, nCols, width);
    const top = 40;
    const gap = Math.min(52, (height - top - NEURON) / Math.max(1, n - 1));
    const y0 = c === nCols - 1 ? (height - NEURON) / 2 - 60 : top;
    return Array.from({ length: n }, (_, k) => ({ x, y: y0 + k * gap }));
  });
  return { inputs, cols };
}

function drawNetwork(s, structural) {
  const net = $("network");
  const width = net.clientWidth || 600, height = net.clientHeight || 460;
  const { inputs, cols } = layout(s, width, height);
  if (structural) buildNetwork(s, inputs, cols);
  // neuron images
  const n = s.neuron_grid;
  const active = s.features;
  inputs.forEach((name, k) => {
    const j = active.indexOf(name);
    const canvas = net.querySelector(`canvas[data-col="0"][data-unit="${k}"]`);
    if (canvas && j >= 0) paintScaled(canvas, imageCanvas(s.neurons[0][j], n));
  });
  for (let c = 1; c < cols.length; c++) {
    cols[c].forEach((_, k) => {
      const canvas = net.querySelector(`canvas[data-col="${c}"][data-unit="${k}"]`);
      if (canvas) paintScaled(canvas, imageCanvas(s.neurons[c][k], n));
      const box = canvas && canvas.parentElement;
      const dead = s.dead && c < cols.length - 1 && s.dead[c - 1] && s.dead[c - 1][k];
      if (box) box.classList.toggle("dead", !!dead);
      const bias = net.querySelector(`.bias[data-col="${c}"][data-unit="${k}"]`);
      if (bias) {
        const bv = s.biases[c - 1][k];
        bias.style.background = `rgb(${colour(Math.max(-1, Math.min(1, bv))).join(",")})`;
      }
    });
  }
  // links
  const maxW = Math.max(1e-9, ...s.weights.flat(2).map(Math.abs));
  net.querySelectorAll("path.link").forEach((p) => {
    const l = +p.dataset.layer, i = +p.dataset.i, j = +p.dataset.j;
    const w = s.weights[l][i][j];
    const rgb = colour(w >= 0 ? 1 : -1);
    p.setAttribute("stroke", `rgb(${rgb.join(",")})`);
    p.setAttribute("stroke-width", String(Math.max(0.6, Math.min(8, (8 * Math.abs(w)) / maxW))));
    p.setAttribute("stroke-opacity", "0.75");
  });
}

function buildNetwork(s, inputs, cols) {
  const net = $("network");
  net.querySelectorAll(".neuron, .bias, .column-head").forEach((e) => e.remove());
  const svg = $("links");
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const lecture = s.mode === "lecture";
  const active = s.features;
  const nCols = cols.length;
  // column heads with +/- per hidden layer
  for (let c = 0; c < nCols; c++) {
    const head = document.createElement("div");
    head.className = "column-head";
    head.style.left = `${cols[c][0].x + NEURON / 2 - 45}px`;
    if (c === 0) head.textContent = "features";
    else if (c === nCols - 1) head.textContent = "output";
    else {
      const h = c - 1;
      const minus = document.createElement("button");
      minus.textContent = "−";
      minus.className = "units-minus";
      minus.dataset.layer = h;
      const plus = document.createElement("button");
      plus.textContent = "+";
      plus.className = "units-plus";
      plus.dataset.layer = h;
      minus.disabled = plus.disabled = lecture;
      minus.onclick = () => changeUnits(h, -1);
      plus.onclick = () => changeUnits(h, +1);
      head.append(minus, plus, document.createElement("br"),
        `${s.layers[c]} neuron${s.layers[c] > 1 ? "s" : ""}`);
    }
    net.appendChild(head);
  }
  // neurons
  cols.forEach((col, c) => {
    col.forEach((pos, k) => {
      const box = document.createElement("div");
      box.className = "neuron";
      box.style.left = `${pos.x}px`;
      box.style.top = `${pos.y}px`;
      box.dataset.col = c;
      box.dataset.unit = k;
      box.id = `neuron-${c}-${k}`;
      const canvas = document.createElement("canvas");
      canvas.width = NEURON - 2;
      canvas.height = NEURON - 2;
      canvas.dataset.col = c;
      canvas.dataset.unit = k;
      box.appendChild(canvas);
      if (c === 0) {
        box.classList.add("input");
        const on = active.includes(inputs[k]);
        box.classList.toggle("off", !on);
        const label = document.createElement("span");
        label.className = "label";
        label.textContent = inputs[k];
        box.appendChild(label);
        box.dataset.feature = inputs[k];
        if (!lecture) box.onclick = () => toggleFeature(inputs[k]);
      } else {
        const bias = document.createElement("div");
        bias.className = "bias";
        bias.dataset.col = c;
        bias.dataset.unit = k;
        bias.id = `bias-${c}-${k}`;
        bias.style.left = `${pos.x - 12}px`;
        bias.style.top = `${pos.y + NEURON - 8}px`;
        bias.addEventListener("mousemove", (e) => showTip(e, biasText(c, k)));
        bias.addEventListener("mouseleave", hideTip);
        net.appendChild(bias);
      }
      box.addEventListener("mousemove", (e) => showTip(e, neuronText(c, k, inputs)));
      box.addEventListener("mouseleave", hideTip);
      net.appendChild(box);
    });
  });
  // links: from active inputs (column 0 rows of the used features) and between layers
  const srcRows = inputs.map((name, k) => (active.includes(name) ? k : -1)).filter((k) => k >= 0);
  for (let l = 0; l < s.weights.length; l++) {
    const from = l === 0 ? srcRows.map((k) => cols[0][k]) : cols[l];
    const to = cols[l + 1];
    from.forEach((a, i) => {
      to.forEach((b, j) => {
        const p = document.createElementNS("http://www.w3.org/2000/svg", "path");
        const x0 = a.x + NEURON, y0 = a.y + NEURON / 2, x1 = b.x, y1 = b.y + NEURON / 2;
        const mx = (x0 + x1) / 2;
        p.setAttribute("d", `M${x0},${y0} C${mx},${y0} ${mx},${y1} ${x1},${y1}`);
        p.setAttribute("class", "link");
        p.id = `link-${l}-${i}-${j}`;
        p.dataset.layer = l;
        p.dataset.i = i;
        p.dataset.j = j;
        p.addEventListener("mousemove", (e) => showTip(e, weightText(l, i, j)));
        p.addEventListener("mouseleave", hideTip);
        $("links").appendChild(p);
      });
    });
  }
}

function unitName(c, k) {
  const last = snap.layers.length - 1;
  return c === last ? "output" : `layer ${c} neuron ${k + 1}`;
}

function weightText(l, i, j) {
  const w = snap.weights[l][i][j];
  const src = l === 0 ? snap.features[i] : `layer ${l} neuron ${i + 1}`;
  return `weight ${fmt(w, 4)}\nfrom ${src} to ${unitName(l + 1, j)}`;
}

function biasText(c, k) {
  return `bias ${fmt(snap.biases[c - 1][k], 4)}\nof ${unitName(c, k)}`;
}

function neuronText(c, k, inputs) {
  if (c === 0) {
    const on = snap.features.includes(inputs[k]);
    return `${inputs[k]} (${on ? "used; click to drop" : "not used; click to add"})`;
  }
  const img = snap.neurons[c][k];
  const dead = snap.dead && snap.dead[c - 1] && snap.dead[c - 1][k];
  return `${unitName(c, k)}\nbias ${fmt(snap.biases[c - 1][k], 4)}\n` +
    `output over the plane from ${fmt(img.lo, 3)} to ${fmt(img.hi, 3)}` +
    (dead ? "\ndead: its ReLU is off on every training point" : "");
}

function showTip(e, text) {
  const tip = $("tooltip");
  tip.textContent = text;
  tip.hidden = false;
  tip.style.left = `${e.clientX + 12}px`;
  tip.style.top = `${e.clientY + 12}px`;
}

function hideTip() { $("tooltip").hidden = true; }

function drawHeatmap(s) {
  const canvas = $("heatmap");
  paintScaled(canvas, imageCanvas(s.heatmap, s.heatmap.n, 0.3));
  const ctx = canvas.getContext("2d");
  const W = canvas.width, E = s.extent;
  const px = (x1) => ((x1 + E) / (2 * E)) * W;
  const py = (x2) => ((E - x2) / (2 * E)) * W;
  if (s.points) {
    const sets = [["train", "#fff"]];
    if ($("show-test").checked) sets.push(["test", "#000"]);
    for (const [name, edge] of sets) {
      for (const [x1, x2, y] of s.points[name]) {
        ctx.beginPath();
        ctx.arc(px(x1), py(x2), 3.2, 0, 2 * Math.PI);
        ctx.fillStyle = `rgb(${(y ? BLUE : ORANGE).join(",")})`;
        ctx.fill();
        ctx.lineWidth = 1;
        ctx.strokeStyle = edge;
        ctx.stroke();
      }
    }
  }
  ctx.fillStyle = "#555";
  ctx.font = "10px sans-serif";
  for (const t of [-E, 0, E]) {
    ctx.fillText(String(t), Math.min(W - 12, Math.max(1, px(t) - 4)), W - 3);
  }
}

function drawLossCurve(s) {
  const canvas = $("loss-curve");
  const ctx = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height;
  ctx.clearRect(0, 0, W, H);
  ctx.strokeStyle = "#eee";
  ctx.strokeRect(0.5, 0.5, W - 1, H - 1);
  if (!s.curve || s.curve.step.length === 0) return;
  const steps = s.curve.step;
  const all = s.curve.train.concat(s.curve.test).filter((v) => v !== null);
  const top = Math.max(1e-9, ...all);
  const last = Math.max(1, steps[steps.length - 1]);
  for (const [name, col] of [["train", "#999"], ["test", "#000"]]) {
    ctx.beginPath();
    ctx.strokeStyle = col;
    ctx.lineWidth = 1.5;
    s.curve[name].forEach((v, i) => {
      const x = (steps[i] / last) * (W - 4) + 2;
      const y = H - 3 - ((v === null ? top : v) / top) * (H - 8);
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
  }
  ctx.font = "10px sans-serif";
  ctx.fillStyle = "#000";
  ctx.fillText("test", W - 70, 12);
  ctx.fillStyle = "#999";
  ctx.fillText("training", W - 46, 12);
  ctx.fillStyle = "#777";
  ctx.fillText(`${fmt(top, 3)}`, 3, 10);
  ctx.fillText(`step ${last}`, 3, H - 4);
  canvas.dataset.points = String(steps.length);
}

function drawGradNorms(s) {
  const canvas = $("grad-norms");
  const ctx = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height;
  ctx.clearRect(0, 0, W, H);
  ctx.font = "10px sans-serif";
  ctx.fillStyle = "#777";
  if (!s.grad_norms) {
    ctx.fillText(s.mode === "lecture" ? "not trained" : "shown once training runs", 4, 14);
    return;
  }
  const g = s.grad_norms;
  const logs = g.map((v) => Math.log10(Math.max(v, 1e-8)));
  const lo = Math.min(-6, ...logs), hi = Math.max(...logs) + 0.3;
  const bw = Math.min(50, (W - 10) / g.length - 6);
  g.forEach((v, l) => {
    const h = ((logs[l] - lo) / (hi - lo)) * (H - 32);
    const x = 6 + l * (bw + 6);
    ctx.fillStyle = "#183d4e";
    ctx.fillRect(x, H - 16 - h, bw, h);
    ctx.fillStyle = "#333";
    ctx.fillText(fmt(v, 2), x, H - 20 - h);
    ctx.fillText(`W${l + 1}`, x + bw / 2 - 6, H - 4);
  });
}

// ------------------------------------------------------------------ controls

function changeUnits(h, delta) {
  const hidden = settings().hidden.slice();
  hidden[h] = Math.max(1, Math.min(8, hidden[h] + delta));
  changeConfig({ hidden });
}

function toggleFeature(name) {
  const current = settings().features;
  const feats = current.includes(name)
    ? current.filter((f) => f !== name)
    : current.concat([name]);
  if (feats.length === 0) { setStatus("at least one feature is needed"); return; }
  changeConfig({ features: feats });
}

function probe(e) {
  if (!snap) return;
  const canvas = $("heatmap");
  const r = canvas.getBoundingClientRect();
  const E = snap.extent;
  // the point is rounded to the 2 decimals shown, so the value shown is the value there
  const x1 = Math.round((-E + ((e.clientX - r.left) / r.width) * 2 * E) * 100) / 100;
  const x2 = Math.round((E - ((e.clientY - r.top) / r.height) * 2 * E) * 100) / 100;
  const g = forwardPoint(snap, x1, x2);
  const what = snap.output === "sigmoid" ? "P(class 1)" : "output g";
  $("probe").textContent =
    `x1 = ${x1.toFixed(2)}, x2 = ${x2.toFixed(2)}: ${what} = ${g.toFixed(3)}`;
}

function wire() {
  $("play").onclick = () => act(snap && snap.playing ? "pause" : "play");
  $("step").onclick = () => act("step");
  $("reset").onclick = () => act("reset", snap ? settings() : {});
  $("lecture").onclick = () => act("lecture");
  $("regenerate").onclick = () => changeConfig({ seed: (settings().seed + 1) % 4294967296 });
  const num = (id, key, parse) => {
    $(id).addEventListener("change", () => {
      const v = parse($(id).value);
      changeConfig({ [key]: Number.isFinite(v) ? v : $(id).value });
    });
  };
  num("lr", "lr", parseFloat);
  num("l2", "l2", parseFloat);
  num("batch", "batch_size", (t) => (/^\d+$/.test(t.trim()) ? parseInt(t, 10) : NaN));
  num("tau", "tau", parseFloat);
  num("noise", "noise", parseFloat);
  num("seed", "seed", (t) => (/^\d+$/.test(t.trim()) ? parseInt(t, 10) : NaN));
  num("ratio", "train_ratio", (t) => parseInt(t, 10) / 100);
  for (const id of ["activation", "init", "skip", "dataset"]) {
    $(id).addEventListener("change", () => changeConfig({ [id]: $(id).value }));
  }
  $("clip").addEventListener("change", () => changeConfig({ clip: $("clip").checked }));
  $("noise").addEventListener("input", () => { $("noise-value").textContent = $("noise").value; });
  $("ratio").addEventListener("input", () => {
    $("ratio-value").textContent = `${$("ratio").value}%`;
  });
  $("add-layer").onclick = () => {
    const hidden = settings().hidden.slice();
    if (hidden.length < 6) hidden.push(hidden.length ? hidden[hidden.length - 1] : 4);
    changeConfig({ hidden });
  };
  $("remove-layer").onclick = () => {
    changeConfig({ hidden: settings().hidden.slice(0, -1) });
  };
  $("show-test").addEventListener("change", () => snap && drawHeatmap(snap));
  $("heatmap").addEventListener("mousemove", probe);
  window.addEventListener("pagehide", () => {
    if (sessionId) navigator.sendBeacon(`/api/session/${sessionId}/close`);
  });
  window.addEventListener("resize", () => snap && draw(snap, true));
}

async function start() {
  wire();
  try {
    await newSession({});
  } catch (e) {
    setStatus(`cannot start a session: ${e.message}`);
  }
  poll();
}

start();
