#!/usr/bin/env node
// Drives the real ComfyUI frontend in headless Chromium for EVAFusion's browser tests.
//
// It is a small JSON-lines RPC server: one request per line on stdin, one answer per line on stdout,
// logs on stderr. tests/browser/driver.py starts it and makes the assertions; this file only acts on
// the page and reports what it sees.
//
//   request:  {"id": 1, "cmd": "open", "args": {"url": "http://127.0.0.1:8188"}}
//   answer:   {"id": 1, "ok": true, "result": {...}}   or   {"id": 1, "ok": false, "error": "..."}
//
// Commands (in the order a test uses them):
//   launch {executable, width, height}   start Chromium (Debian's /usr/bin/chromium by default)
//   open {url, timeout_ms}               new browser context + page; wait for the app; dismiss first-run UI
//   drop {path, timeout_ms}              drop a workflow file on the canvas, as a user's file drop does
//   inspect {}                           nodes, widgets, registered types, visible dialogs and toasts
//   dismiss {}                           close dialogs, toasts and banners that cover the canvas
//   graph_to_prompt {}                   the frontend's own API-format prompt (app.graphToPrompt())
//   queue {timeout_ms}                   click the Run (queue) button; return the POST /api/prompt exchange
//   wait_images {node_ids, timeout_ms}   wait until those nodes show their output images on the canvas
//   screenshot {path, focus_node_ids}    screenshot of the page; with focus ids, zoom the canvas on them
//   close_page {}                        close the page and its context
//   quit {}                              close the browser and exit
//
// Usage outside the tests (manual poking):  echo '{"id":1,"cmd":"launch"}' | node comfy_driver.js

'use strict';

const fs = require('fs');
const path = require('path');
const readline = require('readline');

let chromium;
try {
  ({ chromium } = require('playwright-core'));
} catch (err) {
  process.stderr.write(
    'playwright-core is not installed: run `bash scripts/browser/install.sh`\n' + err + '\n');
  process.exit(3);
}

// Flags that make Debian's Chromium quiet on a machine with no network but loopback.
const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-dev-shm-usage',
  '--hide-scrollbars',
  '--mute-audio',
];

const state = {
  browser: null,
  context: null,
  page: null,
  viewport: { width: 1600, height: 900 },
  events: [], // console errors, page errors, failed requests of the current page
};

function log(...parts) {
  process.stderr.write('[comfy_driver] ' + parts.join(' ') + '\n');
}

function record(kind, text) {
  state.events.push({ kind, text: String(text).slice(0, 2000), t: Date.now() });
  log(kind + ':', String(text).slice(0, 500));
}

function requirePage() {
  if (!state.page) throw new Error('no page is open (call open first)');
  return state.page;
}

// ------------------------------------------------------------------------------------------ commands
async function launch({ executable = process.env.CHROMIUM || '/usr/bin/chromium', width = 1600,
  height = 900 } = {}) {
  if (state.browser) return { already: true, version: state.browser.version() };
  if (!fs.existsSync(executable)) throw new Error(`chromium not found at ${executable}`);
  state.viewport = { width, height };
  const t0 = Date.now();
  // Playwright gives the browser a fresh temporary --user-data-dir and removes it on close.
  state.browser = await chromium.launch({
    executablePath: executable,
    headless: true,
    args: CHROMIUM_ARGS,
  });
  return { version: state.browser.version(), ms: Date.now() - t0 };
}

async function open({ url, timeout_ms = 90000 } = {}) {
  if (!state.browser) await launch();
  if (state.page) await closePage();
  state.events = [];
  state.context = await state.browser.newContext({
    viewport: state.viewport,
    deviceScaleFactor: 1,
    locale: 'en-US',
    colorScheme: 'dark',
  });
  const page = await state.context.newPage();
  state.page = page;
  page.on('console', (msg) => {
    if (msg.type() === 'error') record('console', msg.text());
  });
  page.on('pageerror', (err) => record('pageerror', err.stack || err.message));
  page.on('requestfailed', (req) => {
    // Requests that the page itself aborts or that leave the machine are expected noise.
    record('requestfailed', `${req.method()} ${req.url()} ${req.failure()?.errorText || ''}`);
  });
  const t0 = Date.now();
  await page.goto(url, { waitUntil: 'domcontentloaded', timeout: timeout_ms });
  // window.app is set once the app is set up; the active workflow once the start-up workflow
  // (blank, default or restored) has been loaded, so that it cannot replace a workflow we drop.
  await page.waitForFunction(
    () => Boolean(window.app && window.app.graph && window.app.canvas && window.LiteGraph &&
      window.app.extensionManager?.workflow?.activeWorkflow &&
      document.querySelector('[data-testid="queue-button"]')),
    null, { timeout: timeout_ms, polling: 100 });
  await settle(page);
  const dismissed = await dismiss();
  const info = await page.evaluate(() => ({
    frontend_version: window.__COMFYUI_FRONTEND_VERSION__ || null,
    node_types: Object.keys(window.LiteGraph.registered_node_types).length,
  }));
  return { ...info, ready_ms: Date.now() - t0, dismissed };
}

async function settle(page, frames = 3) {
  await page.evaluate((n) => new Promise((resolve) => {
    const step = (k) => (k <= 0 ? resolve() : requestAnimationFrame(() => step(k - 1)));
    step(n);
  }), frames);
}

// Drop the file on the canvas the way the browser does when a user drops it from the desktop: a
// DataTransfer holding a File, dispatched as dragenter / dragover / drop. The frontend's document
// drop listener reads the file and calls app.handleFile() (which calls app.loadGraphData()). We wrap
// app.handleFile only to learn when that load has finished and whether it threw.
async function drop({ path: file, timeout_ms = 60000 } = {}) {
  const page = requirePage();
  const text = fs.readFileSync(file, 'utf8');
  const name = path.basename(file);
  const t0 = Date.now();
  const outcome = await page.evaluate(async ({ name, text, timeout }) => {
    const app = window.app;
    const canvasEl = app.canvasEl || document.querySelector('#graph-canvas') ||
      document.querySelector('canvas');
    const rect = canvasEl.getBoundingClientRect();
    const at = { clientX: rect.left + rect.width * 0.5, clientY: rect.top + rect.height * 0.5 };
    const own = Object.prototype.hasOwnProperty.call(app, 'handleFile');
    const original = app.handleFile;
    const loaded = new Promise((resolve) => {
      app.handleFile = async function (...args) {
        try {
          await original.apply(this, args);
          resolve({ called: true, file: args[0]?.name, source: args[1] ?? null });
        } catch (err) {
          resolve({ called: true, error: String(err && (err.stack || err)) });
          throw err;
        }
      };
    });
    const restore = () => {
      if (own) app.handleFile = original;
      else delete app.handleFile;
    };
    const dt = new DataTransfer();
    dt.items.add(new File([text], name, { type: 'application/json' }));
    for (const type of ['dragenter', 'dragover', 'drop']) {
      canvasEl.dispatchEvent(new DragEvent(type, {
        bubbles: true, cancelable: true, composed: true, dataTransfer: dt, ...at,
      }));
    }
    const timer = new Promise((resolve) => setTimeout(
      () => resolve({ called: false, error: `the frontend did not load the dropped file within ${timeout} ms` }),
      timeout));
    const result = await Promise.race([loaded, timer]);
    restore();
    return result;
  }, { name, text, timeout: timeout_ms });
  if (outcome.error) throw new Error('drop failed: ' + outcome.error);
  await settle(page);
  return { ...outcome, ms: Date.now() - t0 };
}

async function inspect() {
  const page = requirePage();
  const result = await page.evaluate(() => {
    const { app, LiteGraph } = window;
    const registered = LiteGraph.registered_node_types;
    const plain = (v) => {
      try { return JSON.parse(JSON.stringify(v ?? null)); } catch { return String(v); }
    };
    const visible = (el) => {
      const r = el.getBoundingClientRect();
      const s = getComputedStyle(el);
      return r.width > 0 && r.height > 0 && s.visibility !== 'hidden' && s.display !== 'none';
    };
    const nodes = app.graph.nodes.map((node) => {
      const widgets = (node.widgets || []).map((w) => {
        const o = w.options || {};
        return {
          name: w.name,
          type: w.type,
          value: plain(w.value),
          serialize: w.serialize !== false,
          options: {
            values: Array.isArray(o.values) ? plain(o.values) : null,
            min: typeof o.min === 'number' ? o.min : null,
            max: typeof o.max === 'number' ? o.max : null,
          },
        };
      });
      return {
        id: node.id,
        type: node.type,
        comfy_class: node.comfyClass ?? null,
        title: node.title,
        mode: node.mode,
        registered: Object.prototype.hasOwnProperty.call(registered, node.type),
        is_placeholder: node.constructor === window.LGraphNode,
        has_errors: Boolean(node.has_errors),
        color: node.color ?? null,
        bgcolor: node.bgcolor ?? null,
        widgets,
        serialized_widgets_values: plain(node.serialize().widgets_values ?? null),
        images: (node.imgs || []).map((img) => ({
          src: img.src, complete: img.complete, width: img.naturalWidth, height: img.naturalHeight,
        })),
      };
    });
    const dialogs = [...document.querySelectorAll('.p-dialog')].filter(visible)
      .map((d) => d.innerText.trim().slice(0, 1000));
    const toasts = [...document.querySelectorAll('.p-toast-message')].filter(visible)
      .map((d) => d.innerText.trim().slice(0, 500));
    return {
      nodes,
      registered_types: Object.keys(registered),
      dialogs,
      toasts,
      active_workflow: app.extensionManager?.workflow?.activeWorkflow?.path ?? null,
      last_node_errors: plain(app.lastNodeErrors ?? null),
      last_execution_error: plain(app.lastExecutionError ?? null),
    };
  });
  result.events = state.events.slice();
  return result;
}

// Close what covers the canvas: the "try Nodes 2.0" banner, toasts, then dialogs (close button, or
// Escape). Returns what it closed.
async function dismiss() {
  const page = requirePage();
  const closed = [];
  const banner = page.locator('div.bg-gradient-to-r:has(button) button:has(i[class*="lucide--x"])');
  for (const btn of await banner.all()) {
    if (await btn.isVisible()) {
      const text = (await page.locator('div.bg-gradient-to-r').first().innerText()).trim();
      await btn.click();
      closed.push({ kind: 'banner', text: text.slice(0, 200) });
    }
  }
  for (let round = 0; round < 5; round++) {
    let any = false;
    for (const toast of await page.locator('.p-toast-message').all()) {
      if (!(await toast.isVisible())) continue;
      const text = (await toast.innerText()).trim();
      const btn = toast.locator('.p-toast-close-button');
      if (await btn.count()) await btn.first().click();
      else await toast.evaluate((el) => el.remove());
      closed.push({ kind: 'toast', text: text.slice(0, 300) });
      any = true;
    }
    for (const dialog of await page.locator('.p-dialog').all()) {
      if (!(await dialog.isVisible())) continue;
      const text = (await dialog.innerText()).trim();
      const btn = dialog.locator('.p-dialog-close-button, button[aria-label="Close"]');
      if (await btn.count()) await btn.first().click();
      else await page.keyboard.press('Escape');
      closed.push({ kind: 'dialog', text: text.slice(0, 300) });
      any = true;
    }
    if (!any) break;
    await page.waitForTimeout(300); // closing animations
  }
  await settle(page);
  return closed;
}

async function graphToPrompt() {
  const page = requirePage();
  return await page.evaluate(async () => {
    const p = await window.app.graphToPrompt();
    return { output: JSON.parse(JSON.stringify(p.output)) };
  });
}

// Click the Run button, as a user does, and return the request the frontend sent to POST /api/prompt
// and the server's answer (prompt_id, node_errors).
async function queue({ timeout_ms = 30000 } = {}) {
  const page = requirePage();
  const isPost = (r) => r.request().method() === 'POST' && /\/(api\/)?prompt$/.test(new URL(r.url()).pathname);
  const responseP = page.waitForResponse(isPost, { timeout: timeout_ms });
  const button = page.locator('[data-testid="queue-button"] button').first();
  await button.click();
  const response = await responseP;
  let body = null;
  try { body = await response.json(); } catch { body = await response.text(); }
  let sent = null;
  try { sent = response.request().postDataJSON(); } catch { sent = null; }
  await settle(page);
  return { status: response.status(), body, sent };
}

async function waitImages({ node_ids = [], timeout_ms = 60000 } = {}) {
  const page = requirePage();
  const t0 = Date.now();
  await page.waitForFunction((ids) => ids.every((id) => {
    const node = window.app.graph.getNodeById(id);
    return node && node.imgs && node.imgs.length > 0 &&
      node.imgs.every((img) => img.complete && img.naturalWidth > 0);
  }), node_ids.map(String), { timeout: timeout_ms, polling: 200 });
  await page.evaluate(() => window.app.graph.setDirtyCanvas(true, true));
  await settle(page);
  return { ms: Date.now() - t0 };
}

// With focus_node_ids, the canvas view is fitted on those nodes first (the way "fit view to
// selection" does it) so that their output images are large enough to see.
async function screenshot({ path: out, focus_node_ids = null, zoom = 0.8 } = {}) {
  const page = requirePage();
  if (focus_node_ids && focus_node_ids.length) {
    await page.evaluate(({ ids, zoom }) => {
      const { app } = window;
      let x0 = Infinity; let y0 = Infinity; let x1 = -Infinity; let y1 = -Infinity;
      for (const id of ids) {
        const node = app.graph.getNodeById(id);
        if (!node) continue;
        const [x, y, w, h] = node.boundingRect;
        x0 = Math.min(x0, x); y0 = Math.min(y0, y); x1 = Math.max(x1, x + w); y1 = Math.max(y1, y + h);
      }
      if (!Number.isFinite(x0)) return;
      app.canvas.ds.fitToBounds([x0, y0, x1 - x0, y1 - y0], { zoom });
      app.canvas.setDirty(true, true);
    }, { ids: focus_node_ids.map(String), zoom });
  }
  await settle(page);
  fs.mkdirSync(path.dirname(out), { recursive: true });
  await page.screenshot({ path: out, animations: 'disabled', caret: 'hide' });
  return { path: out, bytes: fs.statSync(out).size };
}

async function closePage() {
  const ctx = state.context;
  state.page = null;
  state.context = null;
  if (ctx) await ctx.close().catch(() => {});
  return {};
}

async function quit() {
  await closePage();
  if (state.browser) await state.browser.close().catch(() => {});
  state.browser = null;
  return {};
}

const COMMANDS = {
  launch,
  open,
  drop,
  inspect,
  dismiss,
  graph_to_prompt: graphToPrompt,
  queue,
  wait_images: waitImages,
  screenshot,
  close_page: closePage,
  quit,
};

// ----------------------------------------------------------------------------------------- main loop
async function main() {
  const rl = readline.createInterface({ input: process.stdin, terminal: false });
  const reply = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
  let quitting = false;
  for await (const line of rl) {
    if (!line.trim()) continue;
    let req;
    try {
      req = JSON.parse(line);
    } catch (err) {
      reply({ id: null, ok: false, error: 'bad JSON request: ' + err.message });
      continue;
    }
    const fn = COMMANDS[req.cmd];
    if (!fn) {
      reply({ id: req.id, ok: false, error: `unknown command ${req.cmd}` });
      continue;
    }
    try {
      const result = await fn(req.args || {});
      reply({ id: req.id, ok: true, result });
    } catch (err) {
      reply({ id: req.id, ok: false, error: String((err && (err.stack || err.message)) || err) });
    }
    if (req.cmd === 'quit') { quitting = true; break; }
  }
  if (!quitting) await quit(); // stdin closed: the test process is gone
  process.exit(0);
}

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => { quit().finally(() => process.exit(0)); });
}

main().catch((err) => {
  log('fatal:', err.stack || err);
  process.exit(1);
});
