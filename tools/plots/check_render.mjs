// Render every plot of a `sanet plots` page headlessly, with the network switched off, and fail if any plot cannot.
//
// Usage: node tools/plots/check_render.mjs reports/plots/index.html
//
// Why: the page must work in a browser with no internet. This script runs the page's own inlined JavaScript (the
// vendored vega, vega-lite and vega-embed copies, not node_modules) in an isolated `vm` context that has no `fetch`,
// `XMLHttpRequest`, `require` or `process`: the network stand-ins it gets throw and are recorded. Each plot script's
// `vegaEmbed(selector, spec, options)` call is captured, the spec is compiled by the inlined vega-lite and rendered to
// SVG by the inlined vega (`View.toSVG()`, with a loader that refuses every load). It fails (exit status 1) when a
// plot needs a network load, renders no marks, targets an element the page lacks, or when any <script> has a src.
// It prints one JSON object: {"ok": bool, "plots": [{"id", "marks", "svgBytes"}], "errors": [...]}.

import { readFileSync } from "node:fs";
import vm from "node:vm";

const SCRIPT_RE = /<script\b([^>]*)>([\s\S]*?)<\/script\s*>/gi;
const ID_RE = /\bid\s*=\s*"([^"]+)"/g;

function parsePage(html) {
  const scripts = [];
  for (const match of html.matchAll(SCRIPT_RE)) {
    const attrs = match[1];
    scripts.push({
      attrs,
      code: match[2],
      vendor: /\bdata-vendor\s*=\s*"([^"]+)"/.exec(attrs)?.[1] ?? null,
      hasSrc: /\bsrc\s*=/.test(attrs),
    });
  }
  const ids = new Set([...html.matchAll(ID_RE)].map((m) => m[1]));
  return { scripts, ids };
}

function isolatedContext(networkAttempts) {
  const refuse = (what) =>
    function () {
      networkAttempts.push(`${what}(${[...arguments].map(String).join(", ")})`);
      throw new Error(`network access is disabled: ${what}`);
    };
  const sandbox = {
    console: { log() {}, info() {}, debug() {}, warn: console.error, error: console.error },
    setTimeout,
    clearTimeout,
    setInterval,
    clearInterval,
    queueMicrotask,
    structuredClone,
    TextEncoder,
    TextDecoder,
    URL,
    fetch: refuse("fetch"),
    XMLHttpRequest: refuse("XMLHttpRequest"),
    WebSocket: refuse("WebSocket"),
    EventSource: refuse("EventSource"),
    Image: refuse("Image"),
    importScripts: refuse("importScripts"),
  };
  return vm.createContext(sandbox, { name: "sanet-plots-page" });
}

// A vega loader that refuses everything: a spec whose data, images or fonts live at a URL fails here.
function refusingLoader(networkAttempts) {
  const refuse = (what) => async (uri) => {
    networkAttempts.push(`loader.${what}(${uri})`);
    throw new Error(`network access is disabled: loader.${what}(${uri})`);
  };
  return {
    load: refuse("load"),
    sanitize: refuse("sanitize"),
    http: refuse("http"),
    file: refuse("file"),
    options: {},
  };
}

function countMarkItems(mark) {
  // Items of the spec's own marks (role "mark"), leaving out axes, legends, titles and the group frames.
  if (!mark) return 0;
  let count = mark.marktype !== "group" && mark.role === "mark" ? (mark.items ?? []).length : 0;
  if (mark.marktype === "group") {
    for (const item of mark.items ?? []) {
      for (const child of item.items ?? []) count += countMarkItems(child);
    }
  }
  return count;
}

function stringLoads(spec, options) {
  // vega-embed loads through its loader only these string-valued inputs; the $schema URL is parsed, never fetched.
  const found = [];
  if (typeof spec === "string") found.push(`spec ${spec}`);
  for (const [where, opts] of [
    ["options", options ?? {}],
    ["usermeta.embedOptions", spec?.usermeta?.embedOptions ?? {}],
  ]) {
    for (const key of ["config", "patch"]) {
      if (typeof opts[key] === "string") found.push(`${where}.${key} ${opts[key]}`);
    }
  }
  return found;
}

function describe(error) {
  // The message and the first frame only: a frame inside a minified bundle would print a whole line of it.
  const text = error && error.stack ? error.stack.split("\n").slice(0, 2).join(" | ") : String(error);
  return text.length > 500 ? `${text.slice(0, 500)}...` : text;
}

async function main() {
  const pagePath = process.argv[2];
  if (!pagePath) {
    console.error("usage: node check_render.mjs PAGE.html");
    process.exit(2);
  }
  const { scripts, ids } = parsePage(readFileSync(pagePath, "utf8"));
  const errors = [];
  const networkAttempts = [];
  const context = isolatedContext(networkAttempts);

  for (const script of scripts.filter((s) => s.hasSrc)) errors.push(`<script${script.attrs}> loads a file`);

  for (const script of scripts.filter((s) => s.vendor)) {
    try {
      vm.runInContext(script.code, context, { filename: `inline ${script.vendor}` });
    } catch (error) {
      errors.push(`inline ${script.vendor} failed to load: ${describe(error)}`);
    }
  }
  for (const name of ["vega", "vegaLite", "vegaEmbed"]) {
    if (context[name] === undefined) errors.push(`the page's inlined scripts do not define ${name}`);
  }
  const { vega, vegaLite } = context;

  const calls = [];
  context.vegaEmbed = (el, spec, options) => {
    calls.push({ el, spec, options });
    return Promise.resolve({});
  };
  for (const [index, script] of scripts.filter((s) => !s.vendor && !s.hasSrc).entries()) {
    try {
      vm.runInContext(script.code, context, { filename: `inline script ${index}` });
    } catch (error) {
      errors.push(`inline script ${index} failed: ${describe(error)}`);
    }
  }
  if (calls.length === 0) errors.push("the page embeds no plot (no vegaEmbed call)");

  const plots = [];
  for (const { el, spec, options } of calls) {
    const id = typeof el === "string" && el.startsWith("#") ? el.slice(1) : null;
    const label = id ?? String(el);
    if (id === null || !ids.has(id)) errors.push(`${label}: vegaEmbed targets an element the page does not have`);
    for (const load of stringLoads(spec, options)) errors.push(`${label}: vega-embed would load ${load}`);
    if (!vega || !vegaLite || typeof spec !== "object") continue;
    try {
      const schema = String(spec.$schema ?? "");
      const vgSpec = schema.includes("/vega-lite/") || !schema ? vegaLite.compile(spec).spec : spec;
      const view = new vega.View(vega.parse(vgSpec), {
        renderer: "none",
        loader: refusingLoader(networkAttempts),
        logLevel: vega.Error,
      });
      await view.runAsync();
      const svg = await view.toSVG();
      const marks = countMarkItems(view.scenegraph().root);
      view.finalize();
      plots.push({ id: label, marks, svgBytes: svg.length });
      if (marks === 0) errors.push(`${label}: rendered no marks`);
      if (!svg.startsWith("<svg")) errors.push(`${label}: toSVG() returned no SVG`);
    } catch (error) {
      errors.push(`${label}: ${describe(error)}`);
    }
  }
  for (const attempt of networkAttempts) errors.push(`network access attempted: ${attempt}`);

  const ok = errors.length === 0;
  process.stdout.write(`${JSON.stringify({ ok, plots, errors })}\n`);
  process.exit(ok ? 0 : 1);
}

main().catch((error) => {
  process.stdout.write(`${JSON.stringify({ ok: false, plots: [], errors: [describe(error)] })}\n`);
  process.exit(1);
});
