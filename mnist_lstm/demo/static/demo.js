// The demo page, in plain JavaScript: the drawing pad, the requests to the server's JSON API, and the views of
// one reading (the answer, the image as the model sees it with its unread rows veiled, the chart of the 28 x 10
// probabilities, the strip of the answers after each row, the heatmaps of the top layer's gates and cell state,
// the bars of each row's importance). The cursor moves here, over what the server sent.
"use strict";

const ROWS = 28;
const CLASSES = 10;
// matplotlib's tab10 (C0..C9): the class colours of the reading figure (mnist_lstm/use/figures.py).
const COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                 "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
const DEBOUNCE_MS = 300; // after a stroke ends, wait this long for another before asking
const PLAY_MS = 140; // one row read per tick when playing
const SVG = "http://www.w3.org/2000/svg";

const $ = (id) => document.getElementById(id);
const percent = (p) => `${(100 * p).toFixed(1)}%`;

const state = {
  reading: null, // the API's answer for what is shown
  row: ROWS, // the cursor: rows read
  timer: null, // playing
  sequence: 0, // the newest request; older answers are dropped
  maxBytes: 10e6,
  noGates: null, // why this server's model has no gates to show (/api/about), or null
};

// ---------------------------------------------------------------- the drawing pad

const pad = $("pad");
const ink = pad.getContext("2d");
let last = null; // the stroke's previous point, while drawing
let pending = null; // the debounced request

function blankPad() {
  ink.fillStyle = "#fff";
  ink.fillRect(0, 0, pad.width, pad.height);
}

function padPoint(event) {
  const box = pad.getBoundingClientRect();
  return [(event.clientX - box.left) * pad.width / box.width, (event.clientY - box.top) * pad.height / box.height];
}

function strokeTo(point) {
  ink.strokeStyle = "#000";
  ink.lineWidth = pad.width / 14; // about MNIST's stroke, once the digit is scaled to 20 pixels
  ink.lineCap = "round";
  ink.lineJoin = "round";
  ink.beginPath();
  ink.moveTo(...last);
  ink.lineTo(...point);
  ink.stroke();
  last = point;
}

pad.addEventListener("pointerdown", (event) => {
  event.preventDefault();
  pad.setPointerCapture(event.pointerId);
  clearTimeout(pending);
  last = padPoint(event);
  strokeTo(last); // a dot, if the pointer does not move
});
pad.addEventListener("pointermove", (event) => {
  if (last) strokeTo(padPoint(event));
});
for (const end of ["pointerup", "pointercancel"]) {
  pad.addEventListener(end, () => {
    if (!last) return;
    last = null;
    clearTimeout(pending);
    pending = setTimeout(readPad, DEBOUNCE_MS);
  });
}

function readPad() {
  pad.toBlob((png) => ask("/api/read", { method: "POST", body: png, headers: { "Content-Type": "image/png" } },
                          "your drawing"), "image/png");
}

// A picture on the pad (a test digit, an opened file), fitted and centred: strokes drawn next add to it.
function showOnPad(source, width, height, invert) {
  blankPad();
  const scale = Math.min(pad.width / width, pad.height / height);
  const w = width * scale;
  const h = height * scale;
  ink.save();
  if (invert) ink.filter = "invert(1)";
  ink.drawImage(source, (pad.width - w) / 2, (pad.height - h) / 2, w, h);
  ink.restore();
}

// ---------------------------------------------------------------- requests

function say(text, isError = false) {
  const message = $("message");
  message.textContent = text;
  message.classList.toggle("error", isError);
}

// Ask the API; show its reading, or its one-line error. `then` runs after a reading is shown.
async function ask(url, options, what, then) {
  const sequence = ++state.sequence;
  say(`Reading ${what}…`);
  let response;
  let data;
  try {
    response = await fetch(url, options);
    data = await response.json();
  } catch (err) {
    if (sequence === state.sequence) {
      say("The server did not answer: is scripts/demo.py still running?", true);
    }
    return;
  }
  if (sequence !== state.sequence) return; // a newer request is on its way
  if (!response.ok) {
    show(null);
    say(data.error || `The server answered ${response.status}.`, true);
    return;
  }
  show(data);
  const sure = percent(data.probabilities[data.answer]);
  say(`Read ${what}: the model answers ${data.answer} (${sure}). Move the slider or press Play to see how.`);
  if (then) then(data);
}

$("random").addEventListener("click", () => {
  ask("/api/test-digit", {}, "a random test digit", (data) => {
    const small = document.createElement("canvas");
    small.width = small.height = ROWS;
    drawImage(small, data.image);
    showOnPad(small, ROWS, ROWS, true);
  });
});

$("file").addEventListener("change", (event) => {
  const file = event.target.files[0];
  event.target.value = ""; // the same file chosen again is a new choice
  if (!file) return;
  if (file.size > state.maxBytes) {
    show(null);
    say(`${file.name} is over the limit of ${state.maxBytes / 1e6} MB: choose a smaller image of the digit.`, true);
    return;
  }
  const options = { method: "POST", body: file, headers: { "Content-Type": file.type || "application/octet-stream" } };
  ask("/api/read", options, file.name, () => {
    createImageBitmap(file).then((bitmap) => showOnPad(bitmap, bitmap.width, bitmap.height, false), () => {});
  });
});

$("clear").addEventListener("click", () => {
  clearTimeout(pending);
  state.sequence++; // an answer still on its way is for the old drawing
  blankPad();
  show(null);
  say("Draw a digit with the mouse or a finger; the answer comes as you lift it.");
});

// ---------------------------------------------------------------- the views of one reading

function show(reading) {
  state.reading = reading;
  stop();
  const answer = $("answer");
  const truth = $("truth");
  if (!reading) {
    answer.textContent = "?";
    answer.style.color = "";
    $("confidence").textContent = "no digit yet";
    truth.textContent = "";
    $("settled").textContent = "";
  } else {
    document.body.dataset.readings = Number(document.body.dataset.readings || 0) + 1; // (for tests: one more)
    const k = reading.answer;
    answer.textContent = k;
    answer.style.color = COLOURS[k];
    $("confidence").textContent = `${percent(reading.probabilities[k])} sure`;
    truth.className = "";
    truth.textContent = "";
    if (reading.label !== null) {
      const right = reading.label === k;
      truth.textContent = `test digit #${reading.index}: true ${reading.label}, ${right ? "right" : "wrong"}`;
      truth.className = right ? "right" : "wrong";
    }
    const changes = reading.changes.length;
    $("settled").textContent = reading.settled_row === 1
      ? "the same answer after every row"
      : `settled on ${k} after row ${reading.settled_row}; changed its mind ${changes} time${changes === 1 ? "" : "s"}`;
  }
  fillBars($("final"), reading ? reading.probabilities : null);
  drawImage($("seen"), reading ? reading.image : null);
  drawLegend();
  drawChart();
  drawInside();
  drawImportance();
  setRow(state.row);
}

// Ten bars (a list of rows) or columns (class "columns"): the digit, its probability in its colour, the percentage.
function fillBars(list, probabilities) {
  const columns = list.classList.contains("columns");
  if (list.children.length !== CLASSES) {
    list.replaceChildren(...COLOURS.map((colour, k) => {
      const item = document.createElement("li");
      const parts = ['<span class="k"></span>', '<span class="track"><span class="fill"></span></span>',
                     '<span class="p"></span>'];
      item.innerHTML = (columns ? [parts[2], parts[1], parts[0]] : parts).join("");
      item.querySelector(".k").textContent = k;
      item.querySelector(".k").style.color = colour;
      item.querySelector(".fill").style.background = colour;
      return item;
    }));
  }
  const top = probabilities ? probabilities.indexOf(Math.max(...probabilities)) : -1;
  [...list.children].forEach((item, k) => {
    const p = probabilities ? probabilities[k] : 0;
    item.querySelector(".fill").style[columns ? "height" : "width"] = `${100 * p}%`;
    item.querySelector(".p").textContent = probabilities ? (columns ? `${Math.round(100 * p)}%` : percent(p)) : "";
    item.classList.toggle("top", k === top);
    item.dataset.p = p.toFixed(6);
  });
}

// A 28 x 28 image in [0, 1] (white digit on black, as the model reads it) onto a canvas of that size.
function drawImage(canvas, image) {
  const context = canvas.getContext("2d");
  const pixels = context.createImageData(ROWS, ROWS);
  for (let r = 0; r < ROWS; r++) {
    for (let c = 0; c < ROWS; c++) {
      const v = image ? Math.round(255 * image[r][c]) : 0;
      pixels.data.set([v, v, v, 255], 4 * (r * ROWS + c));
    }
  }
  context.putImageData(pixels, 0, 0);
}

function drawLegend() {
  const top = state.reading ? state.reading.answer : -1;
  $("legend").replaceChildren(...COLOURS.map((colour, k) => {
    const item = document.createElement("li");
    item.innerHTML = `<span class="swatch"></span>${k}`;
    item.querySelector(".swatch").style.background = colour;
    item.classList.toggle("top", k === top);
    return item;
  }));
}

// The cursor: after `row` rows read. Moves the slider, the veil, the bars and the chart's cursor.
function setRow(row) {
  row = Math.min(Math.max(Math.round(row), 1), ROWS);
  state.row = row;
  $("row").value = row;
  $("row-label").textContent = `${row} / ${ROWS} rows`;
  $("frame").dataset.rowsRead = row;
  const veil = $("veil");
  veil.hidden = row >= ROWS;
  veil.style.top = `${(100 * row) / ROWS}%`;
  const probabilities = state.reading ? state.reading.per_row[row - 1] : null;
  fillBars($("cursor-bars"), probabilities);
  const text = $("cursor-text");
  if (probabilities) {
    const k = state.reading.per_row_answers[row - 1];
    text.innerHTML = `after row ${row} of ${ROWS}: <b></b> (${percent(probabilities[k])})`;
    text.querySelector("b").textContent = k;
    text.querySelector("b").style.color = COLOURS[k];
  } else {
    text.textContent = `after row ${row} of ${ROWS}`;
  }
  moveChartCursor();
}

// ---------------------------------------------------------------- the chart: 10 lines over 28 rows, and the strip

const chart = $("chart");
let geometry = null; // where the chart's rows and probabilities are, for the cursor and the pointer

function element(name, attributes, parent) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  if (parent) parent.appendChild(node);
  return node;
}

// Where the 28 rows are across a chart `width` wide: every chart of the page puts them in the same columns.
function columnsOf(width) {
  const left = 48;
  const right = 10;
  const cell = (width - left - right) / ROWS;
  return { left, right, cell, x: (row) => left + (row - 0.5) * cell }; // row 1..28, at the centre of its column
}

// The rows' numbers under a chart's columns (1, 4, ... 25, 28), at height y.
function rowTicks(svg, x, y) {
  for (const t of [1, 4, 7, 10, 13, 16, 19, 22, 25, ROWS]) {
    element("text", { x: x(t), y, "text-anchor": "middle" }, svg).textContent = t;
  }
}

function drawChart() {
  const width = chart.clientWidth || 600;
  const height = chart.clientHeight || 300;
  const { left, right, cell, x } = columnsOf(width);
  const top = 10;
  const plotBottom = height - 64;
  const y = (p) => plotBottom - p * (plotBottom - top);
  geometry = { left, cell, top, plotBottom, x, y, stripTop: plotBottom + 6, stripHeight: 20 };
  chart.setAttribute("viewBox", `0 0 ${width} ${height}`);
  chart.replaceChildren();

  element("rect", { id: "unread", x: 0, y: top, width: 0, height: plotBottom - top, fill: "#8a8f98",
                    "fill-opacity": 0.16 }, chart);
  for (const p of [0, 0.25, 0.5, 0.75, 1]) {
    element("line", { x1: left, x2: width - right, y1: y(p), y2: y(p), stroke: "#d5d9e0",
                      "stroke-width": p === 0 || p === 1 ? 1 : 0.6 }, chart);
    if (p !== 0.25 && p !== 0.75) {
      element("text", { x: left - 6, y: y(p) + 4, "text-anchor": "end" }, chart).textContent = `${100 * p}%`;
    }
  }
  const title = element("text", { x: 10, y: (top + plotBottom) / 2, "text-anchor": "middle", class: "title",
                                   transform: `rotate(-90 10 ${(top + plotBottom) / 2})` }, chart);
  title.textContent = "probability";

  const reading = state.reading;
  if (reading) {
    // The answer's line last, on top, and thicker.
    const order = [...Array(CLASSES).keys()].filter((k) => k !== reading.answer).concat([reading.answer]);
    for (const k of order) {
      const points = reading.per_row.map((row, t) => `${x(t + 1).toFixed(1)},${y(row[k]).toFixed(1)}`).join(" ");
      element("polyline", { points, fill: "none", stroke: COLOURS[k], "stroke-width": k === reading.answer ? 3 : 1.6,
                            "stroke-opacity": k === reading.answer ? 1 : 0.75, "stroke-linejoin": "round",
                            "data-class": k }, chart);
    }
  }
  element("line", { id: "cursor-line", y1: top, y2: geometry.stripTop + geometry.stripHeight, stroke: "#1d2330",
                    "stroke-width": 1.2, "stroke-dasharray": "4 3" }, chart);
  const dots = element("g", { id: "cursor-dots" }, chart);
  if (reading) {
    for (let k = 0; k < CLASSES; k++) element("circle", { r: 3.5, fill: COLOURS[k], "data-class": k }, dots);
  }

  // The strip: the answer after each row, in its class's colour; a black mark where it changes.
  const strip = element("g", { class: "strip" }, chart);
  for (let t = 1; t <= ROWS; t++) {
    const cellX = left + (t - 1) * cell;
    const answer = reading ? reading.per_row_answers[t - 1] : null;
    element("rect", { x: cellX + 0.5, y: geometry.stripTop, width: Math.max(cell - 1, 1), height: geometry.stripHeight,
                      rx: 2, fill: reading ? COLOURS[answer] : "#eef0f4", "data-row": t, "data-answer": answer ?? "" },
            strip);
    if (reading && cell >= 9) {
      element("text", { x: x(t), y: geometry.stripTop + 14, "text-anchor": "middle" }, strip).textContent = answer;
    }
    if (reading && t > 1 && answer !== reading.per_row_answers[t - 2]) {
      element("rect", { x: cellX - 1.5, y: geometry.stripTop - 4, width: 3, height: geometry.stripHeight + 8,
                        fill: "#1d2330", class: "change", "data-row": t }, chart);
    }
  }
  rowTicks(chart, x, geometry.stripTop + geometry.stripHeight + 13);
  const axis = width < 520 ? "rows read → the answer after each" : "rows read (top to bottom) → the answer after each row";
  element("text", { x: left + (width - left - right) / 2, y: height - 4, "text-anchor": "middle", class: "title" },
          chart).textContent = axis;
  moveChartCursor();
}

function moveChartCursor() {
  if (!geometry) return;
  const { x, y, cell, top, plotBottom } = geometry;
  const row = state.row;
  const line = $("cursor-line");
  line.setAttribute("x1", x(row));
  line.setAttribute("x2", x(row));
  const unread = $("unread");
  unread.setAttribute("x", x(row) + cell / 2);
  unread.setAttribute("width", Math.max(x(ROWS) + cell / 2 - (x(row) + cell / 2), 0));
  unread.setAttribute("y", top);
  unread.setAttribute("height", plotBottom - top);
  if (state.reading) {
    for (const dot of $("cursor-dots").children) {
      dot.setAttribute("cx", x(row));
      dot.setAttribute("cy", y(state.reading.per_row[row - 1][dot.dataset.class]));
    }
  }
  for (const rect of chart.querySelectorAll(".strip rect")) {
    const t = Number(rect.dataset.row);
    rect.setAttribute("fill-opacity", t <= row ? 1 : 0.3);
    rect.setAttribute("stroke", t === row ? "#1d2330" : "none");
    rect.setAttribute("stroke-width", 2);
  }
  for (const svg of [$("inside"), $("importance")]) {
    const columns = columnsOf(Number(svg.dataset.width));
    for (const veil of svg.querySelectorAll(".unread")) {
      veil.setAttribute("x", columns.x(row) + columns.cell / 2);
      veil.setAttribute("width", (ROWS - row) * columns.cell);
    }
    for (const line of svg.querySelectorAll(".cursor")) {
      line.setAttribute("x1", columns.x(row));
      line.setAttribute("x2", columns.x(row));
    }
  }
}

// The row under the pointer, in any of the charts (all put the rows in the same columns).
function rowAt(event) {
  const box = event.currentTarget.getBoundingClientRect();
  return Math.floor((event.clientX - box.left - geometry.left) / geometry.cell) + 1;
}
for (const svg of [chart, $("inside"), $("importance")]) {
  svg.addEventListener("pointerdown", (event) => {
    if (!geometry) return;
    stop();
    setRow(rowAt(event));
  });
  svg.addEventListener("pointermove", (event) => {
    if (geometry && event.buttons === 1) setRow(rowAt(event));
  });
}

new ResizeObserver(() => {
  drawChart();
  drawInside();
  drawImportance();
  moveChartCursor();
}).observe($("chart-box"));

// ---------------------------------------------------------------- inside the cell: the gates, and each row's weight

// Colour scales, as stops from low to high: viridis for a gate (0..1), blue-white-red around 0 for the cell state.
const GATE_STOPS = ["#440154", "#3b528b", "#21918c", "#5ec962", "#fde725"];
const CELL_STOPS = ["#2166ac", "#67a9cf", "#f7f7f7", "#ef8a62", "#b2182b"];
const MAPS = [ // the three maps of the API's "cell", top to bottom
  { key: "forget", title: "forget gate", meaning: "1 keeps the memory, 0 erases it", stops: GATE_STOPS },
  { key: "input", title: "input gate", meaning: "1 writes the row into the memory, 0 ignores it", stops: GATE_STOPS },
  { key: "cell", title: "cell state", meaning: "the memory itself: red above 0, blue below", stops: CELL_STOPS },
];
const UNIT_HEIGHT = 6; // a unit's line in a map
const inside = $("inside");
const importance = $("importance");
const sentence = (text) => `${text[0].toUpperCase()}${text.slice(1)}${text.endsWith(".") ? "" : "."}`;
// A probability, or a change of one, in percent to 2 significant digits: a row may change it by 0.001%.
// Two significant digits, never in exponent notation (a sure model cares 1e-7 for a row).
const precisePercent = (p) => `${(100 * p).toLocaleString("en", { maximumSignificantDigits: 2 })}%`;
const signed = (v, digits) => `${v > 0 ? "+" : v < 0 ? "−" : ""}${Math.abs(v).toFixed(digits)}`;

// The colour at t in [0, 1] along `stops`, linearly between them.
function ramp(stops, t) {
  const at = Math.min(Math.max(t, 0), 1) * (stops.length - 1);
  const k = Math.min(Math.floor(at), stops.length - 2);
  const [a, b] = [stops[k], stops[k + 1]].map((hex) => [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16)));
  return `rgb(${a.map((v, i) => Math.round(v + (b[i] - v) * (at - k))).join(",")})`;
}

// A colour scale `stops` as a bar `width` wide at (x, y), labelled `low` and `high` at its ends.
function colourScale(svg, stops, x, y, width, low, high) {
  const id = `scale-${svg.id}-${stops === GATE_STOPS ? "gate" : "cell"}`;
  if (!svg.querySelector(`#${id}`)) {
    const gradient = element("linearGradient", { id }, svg.querySelector("defs"));
    stops.forEach((colour, k) => element("stop", { offset: k / (stops.length - 1), "stop-color": colour }, gradient));
  }
  element("rect", { x, y: y - 8, width, height: 9, fill: `url(#${id})`, stroke: "#9aa3b2", "stroke-width": 0.5 }, svg);
  element("text", { x: x - 4, y, "text-anchor": "end" }, svg).textContent = low;
  element("text", { x: x + width + 4, y }, svg).textContent = high;
}

// The cursor over the rows of a chart: a dashed line, and a veil over the rows not yet read (moveChartCursor).
function cursorOver(svg, top, bottom) {
  element("rect", { class: "unread", y: top, height: bottom - top, fill: "#8a8f98", "fill-opacity": 0.3 }, svg);
  element("line", { class: "cursor", y1: top - 3, y2: bottom + 3, stroke: "#1d2330", "stroke-width": 1.2,
                    "stroke-dasharray": "4 3" }, svg);
}

// Three heatmaps over the 28 rows: the top layer's forget gate, input gate and cell state, one line per unit shown.
function drawInside() {
  const reading = state.reading;
  const maps = reading ? reading.cell : null;
  const none = state.noGates || (reading && !maps ? "this model's gates cannot be read" : null);
  $("no-gates").hidden = !none;
  $("no-gates").textContent = none ? sentence(none) : "";
  inside.style.display = none ? "none" : "";
  if (none) return;
  const width = inside.clientWidth || 600;
  const { left, right, cell, x } = columnsOf(width);
  const lines = maps ? maps.units.length : 16;
  const band = 20 + lines * UNIT_HEIGHT + 10; // a map's title, the map, a gap
  const height = MAPS.length * band + 30;
  inside.dataset.width = width;
  inside.setAttribute("viewBox", `0 0 ${width} ${height}`);
  inside.setAttribute("height", height);
  inside.replaceChildren();
  element("defs", {}, inside);
  // The cell state's scale: symmetric around 0, to the largest |c| shown (rounded up to a tenth).
  const limit = maps ? Math.max(Math.ceil(10 * Math.max(...maps.cell.flat().map(Math.abs))) / 10, 0.1) : 1;
  const ranges = [];
  MAPS.forEach((map, m) => {
    const top = m * band + 20;
    const bottom = top + lines * UNIT_HEIGHT;
    const title = element("text", { x: left, y: top - 6, class: "title" }, inside);
    title.textContent = map.title;
    if (width >= 520) element("tspan", { class: "meaning" }, title).textContent = `: ${map.meaning}`;
    const [low, high] = map.key === "cell" ? [signed(-limit, 1), signed(limit, 1)] : ["0", "1"];
    colourScale(inside, map.stops, width - right - 100, top - 5, 72, low, high);
    const label = element("text", { x: 10, y: (top + bottom) / 2, "text-anchor": "middle", class: "title",
                                    transform: `rotate(-90 10 ${(top + bottom) / 2})` }, inside);
    label.textContent = "unit";
    element("rect", { x: left, y: top, width: width - left - right, height: bottom - top, fill: "#eef0f4" }, inside);
    if (maps) {
      maps.units.forEach((unit, j) => {
        if (j === 0 || j === lines - 1) {
          element("text", { x: left - 4, y: top + (j + 1) * UNIT_HEIGHT, "text-anchor": "end", class: "unit" }, inside)
            .textContent = unit;
        }
      });
      const values = maps[map.key];
      values.forEach((row, t) => row.forEach((value, j) => {
        const shade = map.key === "cell" ? (value / limit + 1) / 2 : value;
        const rect = element("rect", { x: left + t * cell, y: top + j * UNIT_HEIGHT, width: cell + 0.4,
                                       height: UNIT_HEIGHT + 0.4, fill: ramp(map.stops, shade), class: "heat",
                                       "data-map": map.key, "data-row": t + 1, "data-unit": maps.units[j],
                                       "data-value": value }, inside);
        element("title", {}, rect).textContent = `row ${t + 1}, unit ${maps.units[j]}: ${map.title} ${value}`;
      }));
      const flat = values.flat();
      ranges.push(`${map.title} from ${Math.min(...flat)} to ${Math.max(...flat)}`);
    }
    element("rect", { x: left, y: top, width: width - left - right, height: bottom - top, fill: "none",
                      stroke: "#9aa3b2", "stroke-width": 0.6 }, inside);
    cursorOver(inside, top, bottom);
  });
  rowTicks(inside, x, height - 16);
  element("text", { x: left + (width - left - right) / 2, y: height - 2, "text-anchor": "middle", class: "title" },
          inside).textContent = "rows read (top to bottom)";
  inside.setAttribute("aria-label", maps
    ? `the forget gate, input gate and cell state after each of the ${ROWS} rows, for the ${lines} units of layer ` +
      `${maps.layer + 1} (the top one) whose memory changes most (units ${maps.units.join(", ")}): ${ranges.join("; ")}`
    : "the top layer's gates and cell state after each row read: no digit yet");
}

// One bar per row: how much the answer's probability falls when that row is blanked (below 0: it rises).
function drawImportance() {
  const reading = state.reading;
  const width = importance.clientWidth || 600;
  const { left, right, cell, x } = columnsOf(width);
  const height = 150;
  const [top, bottom] = [22, height - 36];
  importance.dataset.width = width;
  importance.setAttribute("viewBox", `0 0 ${width} ${height}`);
  importance.setAttribute("height", height);
  importance.replaceChildren();
  const values = reading ? reading.importance : [];
  const high = Math.max(...values, 1e-6); // (to scale: the ticks say how little a sure model may care for a row)
  const low = Math.min(...values, 0);
  const y = (v) => top + ((high - v) / (high - low)) * (bottom - top);
  const k = reading ? reading.answer : "the answer";
  element("text", { x: left, y: 12, class: "title" }, importance).textContent = width < 520
    ? `how much p(${k}) falls without the row` : `row importance: how much p(${k}) falls when that row is blanked`;
  const label = element("text", { x: 10, y: (top + bottom) / 2, "text-anchor": "middle", class: "title",
                                   transform: `rotate(-90 10 ${(top + bottom) / 2})` }, importance);
  label.textContent = "fall of p";
  for (const v of y(low) - y(0) >= 12 ? [high, 0, low] : [high, 0]) { // (no label of a low too near 0 to read)
    element("line", { x1: left, x2: width - right, y1: y(v), y2: y(v), stroke: v === 0 ? "#5d6778" : "#d5d9e0",
                      "stroke-width": v === 0 ? 1 : 0.6 }, importance);
    element("text", { x: left - 4, y: y(v) + 4, "text-anchor": "end", class: "tick" }, importance).textContent =
      precisePercent(v);
  }
  values.forEach((v, t) => { // in the answer's colour; outlined below 0 (any fill could be some digit's colour)
    const colour = COLOURS[reading.answer];
    const bar = element("rect", { x: x(t + 1) - 0.35 * cell, y: Math.min(y(v), y(0)), width: 0.7 * cell,
                                  height: Math.abs(y(v) - y(0)), fill: v >= 0 ? colour : "#fff", stroke: colour,
                                  "stroke-width": v >= 0 ? 0 : 1, class: "bar", "data-row": t + 1, "data-value": v },
                          importance);
    element("title", {}, bar).textContent =
      `row ${t + 1} blanked: p(${k}) ${v >= 0 ? "falls" : "rises"} by ${precisePercent(Math.abs(v))}`;
  });
  cursorOver(importance, top, bottom);
  rowTicks(importance, x, bottom + 16);
  element("text", { x: left + (width - left - right) / 2, y: height - 4, "text-anchor": "middle", class: "title" },
          importance).textContent = "row blanked";
  let text = "how much each row matters to the answer: no digit yet";
  if (reading) {
    const [[v1, r1], [v2, r2], [v3, r3]] = values.map((v, t) => [v, t + 1]).sort((a, b) => b[0] - a[0]);
    text = `how much each row matters to the answer ${k}: blanking row ${r1} lowers its probability most, by ` +
      `${precisePercent(v1)}, then row ${r2} (${precisePercent(v2)}) and row ${r3} (${precisePercent(v3)})`;
  }
  importance.setAttribute("aria-label", text);
}

// ---------------------------------------------------------------- the cursor's controls

function stop() {
  clearInterval(state.timer);
  state.timer = null;
  $("play").textContent = "▶ Play";
}

$("play").addEventListener("click", () => {
  if (state.timer) return stop();
  if (state.row >= ROWS) setRow(1);
  $("play").textContent = "❚❚ Pause";
  state.timer = setInterval(() => (state.row >= ROWS ? stop() : setRow(state.row + 1)), PLAY_MS);
});

$("row").addEventListener("input", (event) => {
  stop();
  setRow(Number(event.target.value));
});

// ---------------------------------------------------------------- start

blankPad();
show(null);
fetch("/api/about")
  .then((response) => response.json())
  .then((about) => {
    state.maxBytes = about.max_bytes;
    const digits = about.test_digits ? `${about.test_digits.toLocaleString("en")} official test digits` : "no test digits";
    $("about").textContent = `${about.model || "LSTM"} (${about.source || "?"}) · ${digits}`;
    if (about.test_digits_unavailable) $("random").title = about.test_digits_unavailable;
    state.noGates = about.cell_unavailable;
    drawInside();
    moveChartCursor();
  })
  .catch(() => {});
