// The search page of `landmark-ae serve`: plain DOM, no library, no build step. It reads /card,
// /queries, /neighbours/<row> and POST /query; thumbnails are <img loading="lazy" src="/image/<row>">.
// Credentials (a token server's session cookie) go with every same-origin request on their own.
// <body data-state>: idle, loading, ready (results shown), error. Each neighbour carries data-rank,
// data-id and data-row; #results carries data-query (what was searched).
"use strict";

const BROWSE_PAGE = 12;
const $ = (selector) => document.querySelector(selector);
let browseOffset = 0;

function setState(state, message) {
  document.body.dataset.state = state;
  $("#status").textContent = message || "";
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value !== null && value !== undefined) node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

async function getJSON(url, options) {
  const response = await fetch(url, { credentials: "same-origin", ...(options || {}) });
  if (response.status === 401) {
    location.assign("/"); // the session ended (the server restarted): the login form
    throw new Error("the token is needed again");
  }
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function k() {
  const value = parseInt($("#k").value, 10);
  return Number.isFinite(value) && value > 0 ? value : 10;
}

function thumb(row, alt) {
  if (row === null || row === undefined) return el("span", { class: "blank" });
  return el("img", { src: `/image/${row}`, loading: "lazy", alt: alt, width: 100, height: 100 });
}

function hitElement(hit) {
  const mark = hit.hit === true ? " match" : hit.hit === false ? " miss" : "";
  const figure = el("figure", { class: "hit" + mark, "data-rank": hit.rank, "data-id": hit.id, "data-row": hit.row,
                                title: hit.hit === true ? "same landmark" : hit.hit === false ? "another landmark" : null });
  const label = hit.class_name || (hit.landmark_id === null || hit.landmark_id === undefined ? "" : String(hit.landmark_id));
  figure.append(thumb(hit.row, hit.id), el("figcaption", {}, el("b", {}, `#${hit.rank}`), ` ${hit.distance.toFixed(4)}`,
                el("br"), hit.id, el("br"), label));
  if (hit.row !== null && hit.row !== undefined) figure.addEventListener("click", () => searchRow(hit.row));
  return figure;
}

function showResults(queryNode, description, hits) {
  $("#query").replaceChildren(queryNode, el("span", {}, description));
  const results = $("#results");
  results.replaceChildren(...hits.map(hitElement));
  results.dataset.query = description;
  setState("ready", `${hits.length} nearest database images`);
}

async function searchFile(file) {
  if (!file) return;
  setState("loading", `searching with ${file.name}…`);
  const form = new FormData();
  form.append("image", file, file.name);
  try {
    const body = await getJSON(`/query?k=${k()}`, { method: "POST", body: form });
    const preview = el("img", { src: URL.createObjectURL(file), alt: file.name });
    showResults(preview, `upload: ${file.name}`, body.neighbours);
  } catch (err) {
    setState("error", String(err.message || err));
  }
}

async function searchRow(row) {
  setState("loading", `searching with row ${row}…`);
  try {
    const body = await getJSON(`/neighbours/${row}?k=${k()}`);
    const q = body.query;
    showResults(thumb(row, q.id), `row ${row}: ${q.id} ${q.class_name || q.landmark_id || ""}`.trim(), body.neighbours);
    window.scrollTo({ top: 0 });
  } catch (err) {
    setState("error", String(err.message || err));
  }
}

async function browse(offset) {
  const rows = $("#browse-rows");
  try {
    const body = await getJSON(`/queries?offset=${offset}&limit=${BROWSE_PAGE}&k=${Math.min(k(), 8)}`);
    browseOffset = body.offset;
    $("#browse-title").textContent = body.split ? `The ${body.split} queries and their top ${Math.min(k(), 8)}` : "No prepared queries";
    const last = Math.min(body.offset + body.queries.length, body.total);
    $("#page").textContent = body.total ? `${body.offset + 1}–${last} of ${body.total}` : "";
    $("#prev").disabled = body.offset === 0;
    $("#next").disabled = last >= body.total;
    rows.replaceChildren(...body.queries.map((q) => {
      const query = hitElement({ rank: 0, distance: 0, id: q.id, row: q.row, class_name: q.class_name, landmark_id: q.landmark_id });
      query.querySelector("b").textContent = "query";
      query.dataset.rank = "query";
      const hits = q.neighbours.filter((h) => h.hit !== undefined);
      const right = hits.filter((h) => h.hit).length;
      return el("div", { class: "browse-row" }, query, el("div", { class: "strip" }, ...q.neighbours.map(hitElement)),
                el("span", { class: "muted" }, hits.length ? `${right}/${hits.length} same landmark` : ""));
    }));
    document.body.dataset.browse = "ready";
  } catch (err) {
    rows.replaceChildren(el("p", { class: "muted" }, String(err.message || err)));
  }
}

function fmt(value) {
  return typeof value === "number" ? (Number.isInteger(value) ? String(value) : value.toFixed(4)) : String(value ?? "–");
}

async function loadCard() {
  try {
    const c = await getJSON("/card");
    $("#k").max = c.max_k;
    $("#k").value = Math.min(c.k, c.max_k);
    const shown = ["pooling", "l2", "pca_whiten", "dba_k", "qe_k"]; // the rest are those settings' parameters
    const post = shown.filter((key) => c.postprocess && c.postprocess[key]).map((key) => `${key}=${c.postprocess[key]}`).join(" ");
    const fields = [["model", c.model], ["data", c.data], ["dim", c.dim], ["index", c.index], ["database", c.database_size],
                    ["post-processing", post || "none"], ["embed run", c.embed_run], ["train run", c.train_run]];
    const list = el("dl", {}, ...fields.map(([key, value]) => el("div", {}, el("dt", {}, key), el("dd", {}, fmt(value)))));
    const parts = [list];
    if (c.metrics && c.metrics.results) {
      const columns = ["map@100", "p@1", "p@10", "recall@100", "nmi", "ari"];
      const head = el("tr", {}, el("th", {}, `evaluated (${c.metrics.queries || "test"} queries)`),
                      ...columns.map((m) => el("th", {}, m)));
      const body = Object.entries(c.metrics.results).map(([name, r]) =>
        el("tr", {}, el("td", {}, name), ...columns.map((m) => el("td", { "data-metric": m }, fmt(r[m])))));
      parts.push(el("table", {}, head, ...body));
    } else {
      parts.push(el("p", { class: "muted" }, "not evaluated yet (landmark-ae evaluate embed_run=…)"));
    }
    $("#card").replaceChildren(...parts);
  } catch (err) {
    $("#card").replaceChildren(el("p", { class: "muted" }, String(err.message || err)));
  }
}

function wireDrop() {
  const drop = $("#drop");
  $("#file").addEventListener("change", (event) => searchFile(event.target.files[0]));
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    searchFile(event.dataTransfer.files[0]);
  });
  $("#prev").addEventListener("click", () => browse(Math.max(0, browseOffset - BROWSE_PAGE)));
  $("#next").addEventListener("click", () => browse(browseOffset + BROWSE_PAGE));
}

document.addEventListener("DOMContentLoaded", async () => {
  wireDrop();
  await loadCard();
  await browse(0);
});
