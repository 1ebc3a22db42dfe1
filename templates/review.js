// kr review: the board's only script. It talks to this board alone (same origin, CSRF header on every
// action) and loads nothing else.
"use strict";

const csrf = document.querySelector('meta[name="kr-csrf"]').content;
const readOnly = document.body.dataset.readOnly === "yes";

function say(text, isError) {
  const box = document.getElementById("message");
  box.textContent = text;
  box.classList.toggle("error", Boolean(isError));
  box.hidden = false;
}

async function post(url, data) {
  const response = await fetch(url, {
    method: "POST", credentials: "same-origin", cache: "no-store",
    headers: {"Content-Type": "application/json", "X-KR-CSRF": csrf, "Accept": "application/json"},
    body: JSON.stringify(data),
  });
  const answer = await response.json().catch(() => ({error: `the board answered ${response.status}`}));
  if (!response.ok) throw new Error(answer.error || `the board answered ${response.status}`);
  return answer;
}

function act(form, url, collect, done) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector('button[type="submit"]');
    if (button) button.disabled = true;
    try {
      done(await post(url, collect()));
    } catch (error) {
      say(error.message, true);
    } finally {
      if (button) button.disabled = false;
    }
  });
}

// -- who is reviewing --------------------------------------------------------------------------------

function setupReviewer() {
  const form = document.getElementById("reviewer-form");
  if (!form) return;
  const change = document.getElementById("change-reviewer");
  if (change) change.addEventListener("click", () => { form.hidden = false; form.querySelector("input").focus(); });
  act(form, "/api/reviewer", () => ({name: form.querySelector("input").value}), () => location.reload());
}

function needReviewer() {
  if (document.body.dataset.reviewer) return false;
  say("Give your name first (at the top), so your ratings carry it.", true);
  const form = document.getElementById("reviewer-form");
  if (form) { form.hidden = false; form.querySelector("input").focus(); }
  return true;
}

// -- stars: a row of five buttons inside a .rate form ----------------------------------------------------

function stars(form) {
  let chosen = 0;
  const buttons = Array.from(form.querySelectorAll(".star"));
  const show = (n) => buttons.forEach((b) => b.classList.toggle("on", Number(b.dataset.stars) <= n));
  buttons.forEach((b) => b.addEventListener("click", () => { chosen = Number(b.dataset.stars); show(chosen); }));
  return {get: () => chosen, set: (n) => { chosen = n; show(n); }};
}

function setupCheckpointRatings() {
  document.querySelectorAll("form.checkpoint-rate").forEach((form) => {
    const picked = stars(form);
    act(form, "/api/rate", () => {
      if (needReviewer()) throw new Error("Give your name first (at the top), so your ratings carry it.");
      return {run_id: form.dataset.run, checkpoint: form.dataset.checkpoint, stars: picked.get(),
              note: form.querySelector('input[name="note"]').value};
    }, (entry) => {
      say(`Rated ${entry.checkpoint}: ${entry.stars}★`);
      setTimeout(() => location.reload(), 600);
    });
  });
}

// -- release -----------------------------------------------------------------------------------------

function setupRelease() {
  document.querySelectorAll(".release-open").forEach((button) => {
    const form = button.parentElement.querySelector("form.release");
    button.addEventListener("click", () => { form.hidden = !form.hidden; });
    act(form, "/api/release", () => ({run_id: form.dataset.run, checkpoint: form.dataset.checkpoint,
                                       name: form.querySelector('input[name="name"]').value,
                                       policy: form.querySelector('select[name="policy"]').value}),
        (result) => { say(`Released ${result.checkpoint.label} → ${result.file} (model card ${result.card.markdown})`); form.hidden = true; });
  });
}

// -- post-hoc sampling -------------------------------------------------------------------------------

function setupSampling() {
  const form = document.getElementById("sample-form");
  if (!form) return;
  const ticked = (name) => Array.from(form.querySelectorAll(`input[name="${name}"]:checked`)).map((i) => i.value);
  act(form, "/api/sample", () => ({
    run_id: form.dataset.run, checkpoints: ticked("checkpoints"), kinds: ticked("kinds"),
    strengths: form.querySelector('input[name="strengths"]').value,
    prompts: [form.querySelector('input[name="prompt"]').value].filter((p) => p.trim()),
  }), (started) => { say(`Sampling started: ${started.images} image(s); they appear here when the job is done.`); watchJobs = true; poll(); });
}

// -- comparing: tick two (or more) boxes ----------------------------------------------------------------

function setupCompare() {
  const button = document.getElementById("compare");
  if (!button) return;
  const boxes = Array.from(document.querySelectorAll("input.pick"));
  const picked = () => boxes.filter((b) => b.checked).map((b) => b.value);
  boxes.forEach((b) => b.addEventListener("change", () => { button.disabled = picked().length < 2; }));
  button.addEventListener("click", () => {
    location.href = "/compare?" + picked().map((p) => "pick=" + encodeURIComponent(p)).join("&");
  });
}

// -- live progress: poll the board while something runs -------------------------------------------------

let watchJobs = false;
let pollTimer = null;

function progressText(run) {
  const parts = [];
  if (run.steps_done !== null && run.steps_total) parts.push(`step ${run.steps_done}/${run.steps_total}`);
  if (run.epoch) parts.push(`epoch ${run.epoch}/${run.epochs_total}`);
  if (run.loss !== null) parts.push(`loss ${run.loss.toFixed(4)}`);
  if (run.eta_seconds !== null) parts.push(`${Math.floor(run.eta_seconds / 60)}:${String(run.eta_seconds % 60).padStart(2, "0")} left`);
  return parts.join(" · ");
}

async function poll() {
  clearTimeout(pollTimer);
  const bars = Array.from(document.querySelectorAll("[data-progress]"));
  const active = bars.filter((b) => b.dataset.active === "yes").map((b) => b.dataset.progress);
  const jobs = document.querySelectorAll('#jobs .job-status');
  const running = Array.from(jobs).some((j) => /queued|running/.test(j.textContent));
  if (!active.length && !running && !watchJobs) return;
  const ids = document.body.dataset.page === "review_run" ? [bars[0].dataset.progress] : active;
  try {
    const response = await fetch("/api/progress?runs=" + ids.map(encodeURIComponent).join(","),
                                 {credentials: "same-origin", cache: "no-store", headers: {"Accept": "application/json"}});
    const data = await response.json();
    let reload = false;
    for (const [id, run] of Object.entries(data.runs)) {
      document.querySelectorAll(`[data-progress="${CSS.escape(id)}"]`).forEach((bar) => {
        bar.querySelector("progress").value = run.fraction;
        bar.querySelector(".progress-text").textContent = progressText(run);
        if (bar.dataset.active === "yes" && !run.active && document.body.dataset.page === "review_run") reload = true;
        bar.dataset.active = run.active ? "yes" : "no";
      });
      document.querySelectorAll(`[data-status="${CSS.escape(id)}"]`).forEach((tag) => {
        tag.textContent = run.status;
        tag.className = `tag status ${run.status}`;
      });
      if (document.body.dataset.page === "review_run") reload = reload || jobsChanged(run.jobs);
    }
    if (reload) { setTimeout(() => location.reload(), 400); return; }
  } catch (error) {
    // the board was stopped or restarted: try again a little later
  }
  pollTimer = setTimeout(poll, 1000);
}

function jobsChanged(jobs) {
  const shown = new Map(Array.from(document.querySelectorAll("#jobs tr[data-job]")).map(
    (row) => [row.dataset.job, row.querySelector(".job-status").textContent.trim().split(" ")[0]]));
  for (const job of jobs) {
    const was = shown.get(job.job_id);
    const done = !/queued|running/.test(job.status);
    if ((was === undefined && done) || (was !== undefined && was !== job.status && done)) return true;
    if (was === undefined && !done) return true;  // a job started from this page: show its row
  }
  return false;
}

// -- the image viewer: full size, arrow keys, Z to zoom, 1–5 to rate ----------------------------------

function setupViewer() {
  const viewer = document.getElementById("viewer");
  if (!viewer) return;
  const image = document.getElementById("viewer-image");
  const frame = document.getElementById("viewer-frame");
  const caption = document.getElementById("viewer-caption");
  const rows = Array.from(document.querySelectorAll("table.grid tr.line")).map((row) => Array.from(row.querySelectorAll("td")));
  const rateForm = document.getElementById("viewer-rate");
  const picked = rateForm ? stars(rateForm) : null;
  let at = null;  // [row, column]

  function cellAt(r, c) {
    const td = rows[r] && rows[r][c];
    return td ? td.querySelector("button.cell") : null;
  }
  function open(r, c) {
    const cell = cellAt(r, c);
    if (!cell) return false;
    document.querySelectorAll("button.cell.current").forEach((b) => b.classList.remove("current"));
    cell.classList.add("current");
    at = [r, c];
    image.src = cell.dataset.full;
    image.alt = cell.dataset.caption;
    caption.textContent = cell.dataset.caption;
    viewer.dataset.file = cell.dataset.file;
    viewer.dataset.run = cell.dataset.run;
    viewer.hidden = false;
    if (picked) { picked.set(0); rateForm.querySelector(".rated").textContent = ""; rateForm.querySelector('input[name="note"]').value = ""; }
    return true;
  }
  function move(dr, dc) {
    let [r, c] = at;
    for (let step = 0; step < 200; step++) {
      r += dr; c += dc;
      if (r < 0 || r >= rows.length || c < 0 || c >= (rows[r] || []).length) return;
      if (open(r, c)) return;
    }
  }
  function close() {
    viewer.hidden = true;
    frame.classList.remove("actual");
    const cell = at && cellAt(at[0], at[1]);
    if (cell) cell.focus();
  }
  rows.forEach((row, r) => row.forEach((td, c) => {
    const cell = td.querySelector("button.cell");
    if (cell) cell.addEventListener("click", () => open(r, c));
  }));
  document.getElementById("viewer-close").addEventListener("click", close);
  document.addEventListener("keydown", (event) => {
    if (viewer.hidden || event.target.tagName === "INPUT") return;
    const keys = {ArrowLeft: [0, -1], ArrowRight: [0, 1], ArrowUp: [-1, 0], ArrowDown: [1, 0]};
    if (keys[event.key]) { event.preventDefault(); move(...keys[event.key]); }
    else if (event.key === "Escape") close();
    else if (event.key === "z" || event.key === "Z") frame.classList.toggle("actual");
    else if (picked && /^[1-5]$/.test(event.key)) { picked.set(Number(event.key)); rateForm.requestSubmit(); }
  });
  if (rateForm) {
    act(rateForm, "/api/rate", () => {
      if (needReviewer()) throw new Error("Give your name first (at the top), so your ratings carry it.");
      return {run_id: viewer.dataset.run, sample: viewer.dataset.file, stars: picked.get(),
              note: rateForm.querySelector('input[name="note"]').value};
    }, (entry) => { rateForm.querySelector(".rated").textContent = `rated ${entry.stars}★ as ${entry.reviewer}`; });
  }
}

document.addEventListener("DOMContentLoaded", () => {
  setupReviewer();
  if (!readOnly) { setupCheckpointRatings(); setupRelease(); setupSampling(); }
  setupCompare();
  setupViewer();
  poll();
});
