// The live view: one WebSocket, the server pushes the latest state of what this page watches.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { instruments: [], view: "ladder", watch: null, chainExpiry: null, socket: null, retry: 500 };

const price = (v) => (v == null ? "-" : v.toFixed(4));
const size = (v) => (v == null ? "-" : v.toLocaleString(undefined, { minimumFractionDigits: 1, maximumFractionDigits: 1 }));
const level = (l) => (l == null ? "-" : `${price(l[0])} × ${size(l[1])}`);
const age = (s) => (s == null ? "-" : s < 60 ? `${s.toFixed(1)} s ago` : `${(s / 60).toFixed(0)} min ago`);

function connect() {
  const socket = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
  state.socket = socket;
  socket.onopen = () => {
    state.retry = 500;
    setStatus("live", "live");
    subscribe();
  };
  socket.onclose = () => {
    setStatus("down", "disconnected: reconnecting…");
    setTimeout(connect, state.retry);
    state.retry = Math.min(state.retry * 2, 8000);
  };
  socket.onmessage = (event) => {
    const message = JSON.parse(event.data);
    const handler = handlers[message.type];
    if (handler) handler(message);
  };
}

function setStatus(kind, text) {
  const status = $("status");
  status.className = `status ${kind}`;
  status.textContent = text;
}

function send(message) {
  if (state.socket && state.socket.readyState === WebSocket.OPEN) state.socket.send(JSON.stringify(message));
}

function subscribe() {
  if (state.watch) send({ watch: state.watch });
  if (state.chainExpiry) send({ chain: state.chainExpiry });
}

const handlers = {
  hello(message) {
    $("topic").textContent = message.topic;
    document.title = `${message.title} · live books`;
  },
  error(message) {
    if (message.error) setStatus("down", message.error);
  },
  instruments(message) {
    state.instruments = message.instruments;
    fillExpiries();
  },
  book: renderBook,
  chain: renderChain,
};

// -- pickers ------------------------------------------------------------------------------------

function options(select, values, label = (v) => v) {
  const current = select.value;
  select.replaceChildren(...values.map((v) => new Option(label(v), v)));
  if (values.map(String).includes(current)) select.value = current;
}

function expiries() {
  return [...new Set(state.instruments.filter((i) => i.expiry).map((i) => i.expiry))];
}

function fillExpiries() {
  const list = expiries();
  options($("expiry"), list);
  options($("chain-expiry"), list);
  fillStrikes();
  if (!state.chainExpiry && list.length) chooseChain();
}

function fillStrikes() {
  const expiry = $("expiry").value, kind = $("kind").value;
  const strikes = state.instruments.filter((i) => i.expiry === expiry && i.type === kind).map((i) => i.strike);
  options($("strike"), strikes, (s) => s.toLocaleString());
  chooseInstrument();
}

function chooseInstrument() {
  const expiry = $("expiry").value, kind = $("kind").value, strike = Number($("strike").value);
  const found = state.instruments.find((i) => i.expiry === expiry && i.type === kind && i.strike === strike);
  const name = found ? found.name : null;
  if (name && name !== state.watch) {
    state.watch = name;
    $("instrument-name").textContent = name;
    $("levels").replaceChildren();
    send({ watch: name });
  }
}

function chooseChain() {
  state.chainExpiry = $("chain-expiry").value || null;
  if (state.chainExpiry) send({ chain: state.chainExpiry });
}

// -- the ladder ---------------------------------------------------------------------------------

function renderBook(book) {
  if (book.instrument !== state.watch) return;
  const ladder = $("ladder");
  ladder.dataset.instrument = book.instrument;
  ladder.dataset.changeId = book.change_id ?? "";
  ladder.dataset.reliable = String(Boolean(book.reliable));
  ladder.classList.toggle("unreliable", !book.reliable);
  const banner = $("book-banner");
  banner.classList.toggle("hidden", Boolean(book.reliable));
  banner.textContent = book.reliable ? "" : `Not reliable: ${book.why}`;
  $("best-bid").textContent = level(book.bid);
  $("best-ask").textContent = level(book.ask);
  $("spread").textContent = price(book.spread);
  $("mid").textContent = book.mid == null ? "-" : book.mid.toFixed(5);
  $("rate").textContent = book.rate == null ? "-" : book.rate.toFixed(1);
  $("age").textContent = age(book.age_s);
  $("change-id").textContent = book.change_id ?? "-";
  if (book.missing) return $("levels").replaceChildren();
  const largest = Math.max(1, ...book.bids.map((l) => l[1]), ...book.asks.map((l) => l[1]));
  const rows = [];
  [...book.asks].reverse().forEach((l, i, all) => rows.push(levelRow("ask", l, largest, i === all.length - 1)));
  rows.push(spreadRow(book));
  book.bids.forEach((l, i) => rows.push(levelRow("bid", l, largest, i === 0)));
  $("levels").replaceChildren(...rows);
}

function levelRow(side, [p, amount], largest, best) {
  const row = document.createElement("tr");
  row.className = `level ${side}${best ? " best" : ""}`;
  row.dataset.side = side;
  row.dataset.price = String(p);
  row.dataset.amount = String(amount);
  const width = `${(100 * amount) / largest}%`;
  const sizeCell = (kind) => {
    const cell = document.createElement("td");
    cell.className = `size ${kind}-size`;
    if (kind === side) {
      const bar = document.createElement("div");
      bar.className = "bar";
      bar.style.width = width;
      const text = document.createElement("span");
      text.className = "amount";
      text.textContent = size(amount);
      cell.append(bar, text);
    }
    return cell;
  };
  const priceCell = document.createElement("td");
  priceCell.className = "price";
  priceCell.textContent = price(p);
  row.append(sizeCell("bid"), priceCell, sizeCell("ask"));
  return row;
}

function spreadRow(book) {
  const row = document.createElement("tr");
  row.className = "spread-row";
  const cell = document.createElement("td");
  cell.colSpan = 3;
  cell.textContent = book.spread == null ? "no spread: one side is empty" : `spread ${price(book.spread)} · mid ${book.mid.toFixed(5)}`;
  row.append(cell);
  return row;
}

// -- the chain ----------------------------------------------------------------------------------

function renderChain(chain) {
  if (chain.expiry !== state.chainExpiry) return;
  const table = $("chain");
  table.dataset.expiry = chain.expiry;
  const rows = chain.rows.map((r) => {
    const row = document.createElement("tr");
    row.dataset.strike = String(r.strike);
    row.append(...quoteCells(r.call, "call"));
    const strike = document.createElement("td");
    strike.className = "strike";
    strike.textContent = r.strike.toLocaleString();
    row.append(strike, ...quoteCells(r.put, "put"));
    return row;
  });
  $("chain-rows").replaceChildren(...rows);
  const books = chain.rows.flatMap((r) => [r.call, r.put]).filter(Boolean);
  const unreliable = books.filter((b) => !b.reliable).length;
  $("chain-summary").textContent = `${chain.rows.length} strikes, ${books.length} books` +
    (unreliable ? `, ${unreliable} not reliable` : "");
}

function quoteCells(quote, kind) {
  const values = quote
    ? [size(quote.bid?.[1]), price(quote.bid?.[0]), price(quote.ask?.[0]), size(quote.ask?.[1])]
    : ["", "", "", ""];
  return values.map((text, i) => {
    const cell = document.createElement("td");
    cell.className = ["bids", "bidp", "askp", "asks"][i];
    cell.dataset.kind = kind;
    cell.textContent = text;
    if (quote && !quote.reliable) {
      cell.classList.add("stale");
      cell.title = quote.why;
      if (i === 0) cell.textContent = `! ${text}`;
    }
    return cell;
  });
}

// -- wiring -------------------------------------------------------------------------------------

function show(view) {
  state.view = view;
  for (const name of ["ladder", "chain"]) {
    $(`view-${name}`).classList.toggle("hidden", name !== view);
    $(`tab-${name}`).classList.toggle("active", name === view);
  }
}

$("expiry").addEventListener("change", fillStrikes);
$("kind").addEventListener("change", fillStrikes);
$("strike").addEventListener("change", chooseInstrument);
$("chain-expiry").addEventListener("change", chooseChain);
document.querySelectorAll(".tab").forEach((tab) => tab.addEventListener("click", () => show(tab.dataset.view)));
connect();
