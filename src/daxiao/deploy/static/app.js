// The page's whole logic: pick or drop an image, preview it, POST it to /predict, draw the top-k as bars.
"use strict";
const $ = (id) => document.getElementById(id);
let maxBytes = 10 * 1024 * 1024;
let busy = false;

function setStatus(text, { error = false, spinning = false } = {}) {
  $("message").textContent = text;
  $("status").classList.toggle("error", error);
  $("spinner").hidden = !spinning;
}

function showBars(top) {
  const bars = $("bars");
  bars.replaceChildren();
  for (const t of top) {
    const li = document.createElement("li");
    const pct = (100 * t.probability).toFixed(1);
    li.innerHTML = '<span class="name"></span><span class="track"><span class="fill"></span></span>' +
                   '<span class="pct"></span>';
    li.querySelector(".name").textContent = t.class;
    li.querySelector(".name").title = t.class;
    li.querySelector(".fill").style.width = pct + "%";
    li.querySelector(".pct").textContent = pct + " %";
    bars.appendChild(li);
  }
  $("top-class").textContent = top.length ? top[0].class : "";
  $("result").hidden = false;
}

async function classify(file) {
  if (busy) return;
  $("result").hidden = true;
  if (!file.type.startsWith("image/")) {
    setStatus(`"${file.name}" is not an image (${file.type || "unknown type"}). Choose a PNG, JPEG, GIF, BMP or WebP file.`,
              { error: true });
    return;
  }
  if (file.size > maxBytes) {
    setStatus(`"${file.name}" is ${(file.size / 1048576).toFixed(1)} MB; the limit is ${(maxBytes / 1048576).toFixed(0)} MB.`,
              { error: true });
    return;
  }
  const img = $("preview");
  img.src = URL.createObjectURL(file);
  img.onload = () => img.classList.toggle("tiny", img.naturalWidth < 96);
  img.hidden = false;
  $("hint").textContent = "Drop another image, or click to choose";
  busy = true;
  setStatus("Classifying…", { spinning: true });
  try {
    const body = new FormData();
    body.append("file", file, file.name);
    const r = await fetch("/predict?top_k=5", { method: "POST", body });
    const data = await r.json().catch(() => ({ detail: `HTTP ${r.status}` }));
    if (!r.ok) {
      setStatus(`Could not classify "${file.name}": ${data.detail || "HTTP " + r.status}`, { error: true });
      return;
    }
    showBars(data.predictions[0].top);
    setStatus(`${file.name}`);
  } catch (e) {
    setStatus(`The server did not answer (${e.message}). Is daxiao serve still running?`, { error: true });
  } finally {
    busy = false;
  }
}

const drop = $("drop");
$("file").addEventListener("change", (e) => { if (e.target.files[0]) classify(e.target.files[0]); e.target.value = ""; });
drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("file").click(); } });
for (const ev of ["dragenter", "dragover"]) drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add("over"); });
for (const ev of ["dragleave", "drop"]) drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.remove("over"); });
drop.addEventListener("drop", (e) => {
  const f = e.dataTransfer.files[0];
  if (f) classify(f); else setStatus("Nothing to classify: drop an image file.", { error: true });
});

fetch("/model").then((r) => r.json()).then((m) => {
  maxBytes = m.limits.max_bytes;
  const [c, h, w] = m.input_size;
  $("model").textContent = `${m.name} (${m.kind}${m.variant ? " " + m.variant : ""}), ${m.classes.length} classes, ` +
                           `input ${c}×${h}×${w}`;
}).catch(() => { $("model").textContent = "model description unavailable"; });
