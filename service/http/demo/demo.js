// The demo page: draw or drop a digit, POST it to /explain once, show the answer and the pictures.
// Plain browser JavaScript, no dependencies: the page must work offline and in the container.
"use strict";

const canvas = document.getElementById("draw");
const ctx = canvas.getContext("2d");
const fileInput = document.getElementById("file");
const modelSelect = document.getElementById("model");
const predictButton = document.getElementById("predict");
const clearButton = document.getElementById("clear");
const message = document.getElementById("message");
const topLabel = document.getElementById("top-label");
const topProbability = document.getElementById("top-probability");
const bars = document.getElementById("bars");
const latency = document.getElementById("latency");
const explainArea = document.getElementById("explain");
const source = document.getElementById("source");

const INK_WIDTH = canvas.width / 14; // about MNIST's stroke for a 28-pixel digit
let chosenFile = null; // a chosen or dropped file is posted as it is, not as the canvas
let drawing = false;
let last = null;

function blankCanvas() {
  ctx.fillStyle = "#ffffff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
}

function toDrawing() {
  chosenFile = null;
  fileInput.value = "";
  blankCanvas();
  source.textContent = "Draw in the box, or drop an image on it.";
}

function clearAnswer() {
  topLabel.textContent = "";
  topProbability.textContent = "";
  bars.replaceChildren();
  latency.textContent = "";
}

function showMessage(text) {
  message.textContent = text;
}

// Drawing, with Pointer Events: mouse, pen and touch alike.
function point(event) {
  const rect = canvas.getBoundingClientRect();
  return {
    x: ((event.clientX - rect.left) * canvas.width) / rect.width,
    y: ((event.clientY - rect.top) * canvas.height) / rect.height,
  };
}

function strokeTo(p) {
  ctx.strokeStyle = "#000000";
  ctx.lineWidth = INK_WIDTH;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  ctx.beginPath();
  ctx.moveTo(last.x, last.y);
  ctx.lineTo(p.x, p.y);
  ctx.stroke();
  last = p;
}

canvas.addEventListener("pointerdown", (event) => {
  if (chosenFile !== null) toDrawing(); // drawing again leaves the file behind
  drawing = true;
  canvas.setPointerCapture(event.pointerId);
  last = point(event);
  strokeTo(last); // a dot for a tap
  event.preventDefault();
});
canvas.addEventListener("pointermove", (event) => {
  if (!drawing) return;
  for (const e of event.getCoalescedEvents ? event.getCoalescedEvents() : [event]) {
    strokeTo(point(e));
  }
});
for (const type of ["pointerup", "pointercancel"]) {
  canvas.addEventListener(type, () => {
    drawing = false;
  });
}

// A chosen or dropped file: previewed in the box, posted as its own bytes.
function useFile(file) {
  if (!file) return;
  chosenFile = file;
  blankCanvas();
  source.textContent = `Using ${file.name} (${Math.max(1, Math.round(file.size / 1024))} KB). Draw or press Clear to draw instead.`;
  const url = URL.createObjectURL(file);
  const image = new Image();
  image.onload = () => {
    const scale = Math.min(canvas.width / image.width, canvas.height / image.height);
    const w = image.width * scale;
    const h = image.height * scale;
    ctx.drawImage(image, (canvas.width - w) / 2, (canvas.height - h) / 2, w, h);
    URL.revokeObjectURL(url);
  };
  image.onerror = () => {
    source.textContent = `${file.name}: this browser cannot show it; the server will say what it makes of it.`;
    URL.revokeObjectURL(url);
  };
  image.src = url;
}

fileInput.addEventListener("change", () => useFile(fileInput.files[0]));
canvas.addEventListener("dragover", (event) => {
  event.preventDefault();
  canvas.classList.add("dragging");
});
canvas.addEventListener("dragleave", () => canvas.classList.remove("dragging"));
canvas.addEventListener("drop", (event) => {
  event.preventDefault();
  canvas.classList.remove("dragging");
  useFile(event.dataTransfer.files[0]);
});

clearButton.addEventListener("click", () => {
  toDrawing();
  clearAnswer();
  showMessage("");
});

// The models to pick from: the latest version of each image model.
async function loadModels() {
  try {
    const response = await fetch("/models");
    if (!response.ok) throw new Error(`status ${response.status}`);
    const body = await response.json();
    const images = body.models.filter((m) => m.task === "image-classification" && m.latest);
    modelSelect.replaceChildren(
      ...images.map((m) => {
        const option = document.createElement("option");
        option.value = m.name;
        option.textContent = `${m.name} (${m.dataset})`;
        option.selected = m.name === body.default_model;
        return option;
      }),
    );
  } catch (error) {
    showMessage(`Could not list the models (${error.message}); the default model will answer.`);
  }
}

function canvasBlob() {
  return new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
}

// An error answer as a sentence for a person (the API's body is {"error", "detail"}).
function explainError(status, body, retryAfter) {
  const said = body && typeof body.error === "string" ? body.error : "";
  const reason = body && body.detail && body.detail.reason;
  if (status === 422 && reason === "no_ink") {
    return "No ink found: draw a digit first, or choose an image with a visible digit.";
  }
  if (status === 422) return `The server could not use this input: ${said}.`;
  if (status === 413) return `That image is too large: ${said}.`;
  if (status === 415) {
    return "That file is not an image the server can read: send a PNG, JPEG, GIF, BMP or WebP file.";
  }
  if (status === 503) {
    const wait = retryAfter ? ` in ${retryAfter} second${retryAfter === "1" ? "" : "s"}` : " in a moment";
    return `The server is busy: try again${wait}.`;
  }
  if (status === 401 || status === 403) return "This server needs an API key for predictions.";
  if (status === 400) return `The server could not read this image: ${said}.`;
  return said ? `The server said: ${said} (status ${status}).` : `The server answered status ${status}.`;
}

function percent(p) {
  return p < 0.001 ? "<0.1%" : `${(p * 100).toFixed(1)}%`;
}

function showAnswer(body) {
  const best = body.predictions[0];
  topLabel.textContent = best.label;
  topProbability.textContent = percent(best.probability);
  bars.replaceChildren(
    ...body.predictions.map((p) => {
      const item = document.createElement("li");
      const label = document.createElement("span");
      label.className = "label";
      label.textContent = p.label;
      const track = document.createElement("span");
      track.className = "track";
      const fill = document.createElement("span");
      fill.className = "fill";
      fill.style.display = "block";
      fill.style.width = `${Math.max(0, Math.min(1, p.probability)) * 100}%`;
      track.append(fill);
      const value = document.createElement("span");
      value.className = "value";
      value.textContent = percent(p.probability);
      item.append(label, track, value);
      item.setAttribute("aria-label", `${p.label}: ${percent(p.probability)}`);
      return item;
    }),
  );
  latency.textContent = `${body.model} version ${body.version}, answered in ${body.latency_ms.toFixed(0)} ms`;
}

function figure(png, cls, alt, title, caption) {
  const fig = document.createElement("figure");
  fig.className = cls;
  const img = document.createElement("img");
  img.src = `data:image/png;base64,${png}`;
  img.className = cls;
  img.alt = alt;
  const cap = document.createElement("figcaption");
  const strong = document.createElement("strong");
  strong.textContent = title;
  cap.append(strong, caption);
  fig.append(img, cap);
  return fig;
}

function points(drop) {
  return drop < 0.001 ? "by less than 0.1 points: it rests on no one patch" :
    `by up to ${(drop * 100).toFixed(1)} points`;
}

function largestDrop(grid) {
  return Math.max(0, ...grid.flat());
}

function showPictures(body) {
  const o = body.occlusion;
  const pictures = document.createElement("div");
  pictures.className = "pictures";
  pictures.append(
    figure(body.input_png, "small", "The input as the model saw it", "Input the model saw",
      "after canonicalisation"),
    figure(o.png, "small", "Occlusion heat map over the input", "Where the answer rests",
      `red where masking a ${o.patch}×${o.patch} patch lowers ${body.predictions[0].label}'s ` +
      `probability (${points(largestDrop(o.grid))})`),
  );
  for (const a of body.activations) {
    const [c, h, w] = a.shape;
    pictures.append(figure(a.png, "grid", `Activation maps of ${a.layer}`, `Layer ${a.layer}`,
      `${c} maps of ${h}×${w}, after its activation`));
  }
  if (body.filters_png) {
    pictures.append(figure(body.filters_png, "grid", "First-layer filters", "First-layer filters",
      "the weights of the first convolution"));
  }
  if (body.activations.length === 0) {
    const note = document.createElement("p");
    note.className = "hint";
    note.textContent = "This model has no convolution layers to show (or its export lists none): the occlusion map shows what it relies on.";
    pictures.append(note);
  }
  const heading = explainArea.querySelector("h2");
  explainArea.replaceChildren(heading, pictures);
}

async function predict() {
  predictButton.disabled = true;
  clearAnswer();
  showMessage("");
  try {
    const form = new FormData();
    if (chosenFile !== null) {
      form.append("image", chosenFile, chosenFile.name);
    } else {
      form.append("image", await canvasBlob(), "drawing.png");
    }
    if (modelSelect.value) form.append("model", modelSelect.value);
    form.append("top_k", "3");
    let response;
    try {
      response = await fetch("/explain", { method: "POST", body: form });
    } catch (error) {
      showMessage("Could not reach the server: check that it is running, then try again.");
      return;
    }
    let body = null;
    try {
      body = await response.json();
    } catch (error) {
      body = null;
    }
    if (!response.ok || body === null) {
      showMessage(explainError(response.status, body, response.headers.get("Retry-After")));
      return;
    }
    showAnswer(body);
    showPictures(body);
  } finally {
    predictButton.disabled = false;
  }
}

predictButton.addEventListener("click", predict);
blankCanvas();
loadModels();
