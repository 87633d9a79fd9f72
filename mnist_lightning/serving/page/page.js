"use strict";
// Draw on the canvas; at the end of each stroke the drawing goes to /predict as a PNG, and the answer
// (the digit and the ten probabilities) is shown beside it. White ink on black, as MNIST's digits are;
// the server's preprocessing would handle black on white just as well.

const canvas = document.getElementById("canvas");
const context = canvas.getContext("2d");
const predictionView = document.getElementById("prediction");
const confidenceView = document.getElementById("confidence");
const barsView = document.getElementById("probabilities");
const statusView = document.getElementById("status");

let drawing = false;
let last = null;
let sent = 0; // requests sent, numbered
let shown = 0; // the newest request whose answer is on screen: a late answer to an older stroke is ignored

const bars = [...Array(10).keys()].map((digit) => {
  const bar = document.createElement("div");
  bar.className = "bar";
  bar.dataset.digit = digit;
  bar.innerHTML = '<div class="fill"></div><div class="digit">' + digit + "</div>";
  barsView.appendChild(bar);
  return bar;
});

function clearBoard() {
  context.fillStyle = "#000";
  context.fillRect(0, 0, canvas.width, canvas.height);
  context.strokeStyle = "#fff";
  context.fillStyle = "#fff";
  context.lineWidth = 18;
  context.lineCap = "round";
  context.lineJoin = "round";
  shown = sent; // answers still in flight belong to the old drawing
  predictionView.textContent = "–";
  confidenceView.innerHTML = "&nbsp;";
  statusView.textContent = "";
  showProbabilities(null);
}

function showProbabilities(probabilities) {
  const best = probabilities ? probabilities.indexOf(Math.max(...probabilities)) : -1;
  bars.forEach((bar, digit) => {
    const p = probabilities ? probabilities[digit] : 0;
    bar.dataset.probability = p;
    bar.title = digit + ": " + (100 * p).toFixed(1) + "%";
    bar.querySelector(".fill").style.height = (100 * p).toFixed(1) + "%";
    bar.classList.toggle("best", digit === best);
  });
}

function position(event) {
  const box = canvas.getBoundingClientRect();
  return {
    x: ((event.clientX - box.left) * canvas.width) / box.width,
    y: ((event.clientY - box.top) * canvas.height) / box.height,
  };
}

canvas.addEventListener("pointerdown", (event) => {
  event.preventDefault();
  canvas.setPointerCapture(event.pointerId);
  drawing = true;
  last = position(event);
  context.beginPath();
  context.arc(last.x, last.y, context.lineWidth / 2, 0, 2 * Math.PI);
  context.fill();
});

canvas.addEventListener("pointermove", (event) => {
  if (!drawing) return;
  const point = position(event);
  context.beginPath();
  context.moveTo(last.x, last.y);
  context.lineTo(point.x, point.y);
  context.stroke();
  last = point;
});

function endStroke() {
  if (!drawing) return;
  drawing = false;
  send();
}
canvas.addEventListener("pointerup", endStroke);
canvas.addEventListener("pointercancel", endStroke);

// A service started with auth.predict=true needs its token: open the page as /#token=<token>. The part after #
// never leaves the browser in a request, so the token stays out of server and proxy logs.
const token = new URLSearchParams(location.hash.slice(1)).get("token");
const authorization = token ? { Authorization: "Bearer " + token } : {};

async function send() {
  const id = ++sent;
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
  try {
    // the PNG as the whole body: the server has no form to parse
    const headers = { "Content-Type": "image/png", ...authorization };
    const response = await fetch("predict", { method: "POST", body: blob, headers: headers });
    const body = await response.json();
    if (id <= shown) return;
    shown = id;
    if (!response.ok) {
      statusView.textContent = body.detail || "the server refused the drawing (" + response.status + ")";
      return;
    }
    statusView.textContent = "";
    if (body.prediction === null) {
      predictionView.textContent = "?";
      confidenceView.textContent = body.reason;
      showProbabilities(null);
      return;
    }
    predictionView.textContent = body.prediction;
    confidenceView.textContent = (100 * body.confidence).toFixed(1) + "% sure";
    showProbabilities(body.probabilities);
  } catch (error) {
    statusView.textContent = "no answer from the server: " + error;
  }
}

document.getElementById("clear").addEventListener("click", clearBoard);

fetch("model", { headers: authorization })
  .then((response) => response.json())
  .then((info) => {
    document.getElementById("model-version").textContent = info.network + " " + info.model_version;
  })
  .catch(() => {});

clearBoard();
