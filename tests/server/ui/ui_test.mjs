// ui_test.mjs NANO_VLLM MODEL_DIR LONG_MODEL_DIR ARTIFACTS CHROMIUM TMPDIR
//
// The playground page in headless Chromium (npm puppeteer-core) against the real server:
//   page: headers and CSP, no console error or CSP violation, model name and context length;
//         a prompt typed and generated equals the API's answer for the same seed and settings
//         (also with a stop string and with Ctrl+Enter); the top-5 alternatives on hover equal
//         the API's logprobs; Stop (Escape) on a long generation ends it on the server (running
//         gauge back to 0, KV blocks back, counted as aborted); labels; phone width; screenshots
//   key:  with --api-key the page asks for the key, refuses a wrong one, works with the right one;
//         that model has no chat template and the page offers no chat mode
//   no-ui: with --no-ui, / is a 404
//   chat: the main server has a chat template (--chat-template FILE): in chat mode with a system
//         prompt each streamed reply equals /v1/chat/completions' answer for the same
//         conversation and settings, the second turn sends the whole conversation (its prompt
//         tokens are /tokenize's count for it), the tooltips show the API's top_logprobs, a
//         refused message is taken back, Stop ends the request on the server; a screenshot
// Exit status 0 when every check passed; each failure prints what came and what was wanted.
import puppeteer from "puppeteer-core";
import { spawn } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import path from "node:path";

const [BIN, MODEL, LONG_MODEL, ARTIFACTS, CHROMIUM, TMP] = process.argv.slice(2);
const T0 = Date.now();
let failures = 0;

function check(cond, what, got, want) {
  if (!cond) {
    failures++;
    let msg = `FAIL ${what}`;
    if (got !== undefined || want !== undefined)
      msg += `\n    got:  ${JSON.stringify(got)}\n    want: ${JSON.stringify(want)}`;
    console.error(msg);
  }
  return cond;
}
const checkEq = (got, want, what) => check(JSON.stringify(got) === JSON.stringify(want), what, got, want);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const phase = (what) => console.log(`${((Date.now() - T0) / 1000).toFixed(1)} s: ${what}`);

// ---- the server ----

class Server {
  constructor(model, args) {
    this.log = [];
    this.proc = spawn(BIN, ["serve", model, "--port", "0", "--kv-cache-memory", "64M", ...args],
                      { stdio: ["ignore", "pipe", "pipe"] });
    this.exited = new Promise((resolve) => this.proc.on("exit", (code) => resolve(code)));
    this.ready = new Promise((resolve, reject) => {
      let buf = "";
      const onData = (d) => {
        buf += d;
        let nl;
        while ((nl = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          this.log.push(line);
          const m = line.match(/listening on 127\.0\.0\.1:(\d+)/);
          if (m) this.base = `http://127.0.0.1:${m[1]}`;
          if (/ srv ready$/.test(line)) resolve();
        }
      };
      this.proc.stdout.setEncoding("utf8").on("data", onData);
      this.proc.stderr.setEncoding("utf8").on("data", onData);
      this.exited.then((code) => reject(new Error(`server exited (${code}):\n${this.log.join("\n")}`)));
      setTimeout(() => reject(new Error("server not ready in 30 s:\n" + this.log.join("\n"))), 30000);
    });
  }

  async stop() {
    this.proc.kill("SIGTERM");
    const code = await Promise.race([this.exited, sleep(30000).then(() => "timeout")]);
    if (code === "timeout") this.proc.kill("SIGKILL");
    check(code === 0, "the server exits 0 on SIGTERM", code, 0);
    const bad = this.log.filter((l) => /runtime error|Sanitizer/.test(l));
    check(bad.length === 0, "no sanitizer report in the server log", bad.slice(0, 5));
  }
}

async function api(srv, method, p, body, headers = {}) {
  const h = { ...headers };
  if (body !== undefined) h["Content-Type"] = "application/json";
  const res = await fetch(srv.base + p, { method, headers: h,
                                          body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  let json = null;
  try { json = JSON.parse(text); } catch (e) { /* not JSON */ }
  return { status: res.status, headers: res.headers, text, json };
}

async function metrics(srv) {
  const r = await api(srv, "GET", "/metrics");
  const m = {};
  for (const line of r.text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const i = line.lastIndexOf(" ");
    m[line.slice(0, i)] = Number(line.slice(i + 1));
  }
  return m;
}

async function waitMetrics(srv, ok, timeoutMs = 10000) {
  const end = Date.now() + timeoutMs;
  let m = await metrics(srv);
  while (!ok(m) && Date.now() < end) {
    await sleep(50);
    m = await metrics(srv);
  }
  return m;
}

// ---- the browser ----

let browser = null;
const launch = () => puppeteer.launch({
  executablePath: CHROMIUM,
  headless: true,
  userDataDir: mkdtempSync(path.join(TMP, "chromium-")),
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  protocolTimeout: 60000,
});

// A new page whose console errors, uncaught exceptions and CSP violations are collected.
async function newPage() {
  const page = await browser.newPage();
  page.setDefaultTimeout(20000);
  page.problems = [];
  page.on("console", (m) => {
    if (m.type() === "error" || m.type() === "warn") page.problems.push(`console ${m.type()}: ${m.text()}`);
  });
  page.on("pageerror", (e) => page.problems.push(`exception: ${e.message}`));
  await page.evaluateOnNewDocument(() => {
    document.addEventListener("securitypolicyviolation", (e) =>
      console.error(`CSP violation: ${e.violatedDirective} ${e.blockedURI}`));
  });
  return page;
}

const text = (page, sel) => page.$eval(sel, (el) => el.textContent);
const hidden = (page, sel) => page.$eval(sel, (el) => el.closest("[hidden]") !== null);

async function setValue(page, id, value) {
  await page.$eval(`#${id}`, (el, v) => { el.value = v; }, String(value));
}

async function typePrompt(page, id, value) {
  await setValue(page, id, "");
  await page.type(`#${id}`, value);
}

async function setSampling(page, s) {
  await setValue(page, "max-tokens", s.max_tokens);
  await setValue(page, "temperature", s.temperature);
  await setValue(page, "top-p", s.top_p);
  await setValue(page, "top-k", s.top_k || 0);
  await setValue(page, "seed", s.seed === undefined ? "" : s.seed);
  await setValue(page, "stop-strings", (s.stop || []).join("\n"));
}

async function waitDone(page) {
  await page.waitForFunction(() => !document.getElementById("generate").disabled &&
                             document.getElementById("finish").textContent !== "–");
}

// ---- the page on a server without a key ----

function checkHeaders(r, what) {
  check(r.status === 200, `${what}: status`, r.status, 200);
  checkEq(r.headers.get("content-type"), "text/html; charset=utf-8", `${what}: Content-Type`);
  const csp = r.headers.get("content-security-policy") || "";
  for (const want of ["default-src 'none'", "connect-src 'self'", "img-src 'self' data:",
                      "base-uri 'none'", "form-action 'none'", "frame-ancestors 'none'"])
    check(csp.includes(want), `${what}: CSP has ${want}`, csp);
  check(/script-src 'sha256-[A-Za-z0-9+/]{43}='(;|$)/.test(csp), `${what}: script-src is one hash`, csp);
  check(/style-src 'sha256-[A-Za-z0-9+/]{43}='(;|$)/.test(csp), `${what}: style-src is one hash`, csp);
  check(!csp.includes("unsafe"), `${what}: no 'unsafe-*' in the CSP`, csp);
  checkEq(r.headers.get("x-content-type-options"), "nosniff", `${what}: nosniff`);
  checkEq(r.headers.get("referrer-policy"), "no-referrer", `${what}: Referrer-Policy`);
  checkEq(r.headers.get("x-frame-options"), "DENY", `${what}: X-Frame-Options`);
  checkEq(r.headers.get("cache-control"), "no-cache", `${what}: Cache-Control`);
}

// The rows the page's tooltip should show for one token of the API's logprobs.
function expectedRows(token, logprob, top) {
  const pct = (lp) => (100 * Math.exp(lp)).toFixed(1) + "%";
  const rows = Object.entries(top).sort((a, b) => b[1] - a[1]).slice(0, 5);
  if (!rows.some((r) => r[0] === token)) rows.push([token, logprob]);
  return rows.map(([t, lp]) => [JSON.stringify(t), pct(lp), t === token ? "chosen" : ""]);
}

async function testPage(srv) {
  for (const p of ["/", "/index.html"]) checkHeaders(await api(srv, "GET", p), `GET ${p}`);
  const head = await api(srv, "HEAD", "/");
  check(head.status === 200 && head.text === "", "HEAD / is 200 without a body", head.status);
  const models = (await api(srv, "GET", "/v1/models")).json.data[0];

  const page = await newPage();
  await page.setViewport({ width: 1000, height: 640 });
  await page.goto(srv.base + "/");
  await page.waitForSelector("#app", { visible: true });
  checkEq(await text(page, "#model-name"), models.id, "the page names the model");
  checkEq(await text(page, "#model-len"), String(models.max_model_len), "the page shows max_model_len");
  checkEq(await hidden(page, "#chat-choice"), !models.capabilities.includes("chat"),
          "chat mode is offered exactly when the model can chat");
  const unlabelled = await page.$$eval("input, textarea, select",
                                       (els) => els.filter((e) => !e.labels || !e.labels.length).map((e) => e.id));
  checkEq(unlabelled, [], "every control has a label");

  // A prompt typed and generated equals the API's answer for the same seed and settings.
  const prompt = "The quick brown fox";
  const s = { max_tokens: 24, temperature: 0.9, top_p: 0.9, top_k: 40, seed: 1234 };
  await typePrompt(page, "prompt", prompt);
  await setSampling(page, s);
  await page.click("#generate");
  await waitDone(page);
  const shown = await text(page, "#output");
  const want = (await api(srv, "POST", "/v1/completions", { prompt, ...s, logprobs: 5 })).json;
  const choice = want.choices[0];
  checkEq(shown, choice.text, "the page's streamed text equals the API's answer");
  check(shown.length > 0, "the page shows generated text", shown);
  checkEq(await text(page, "#n-completion"), String(want.usage.completion_tokens), "completion tokens");
  checkEq(await text(page, "#n-prompt"), String(want.usage.prompt_tokens), "prompt tokens");
  checkEq(await text(page, "#finish"), choice.finish_reason, "finish reason");
  const ttft = await text(page, "#ttft"), tps = await text(page, "#tps");
  check(/^\d+\.\d{3} s$/.test(ttft), "time to first token shown", ttft);
  check(Number(tps) > 0, "tokens/s shown", tps);

  // Hovering a token shows its top-5 alternatives: the API's logprobs, token by token.
  const lp = choice.logprobs;
  const spans = await page.$$("#output span[data-i]");
  let k = 0;
  for (const span of spans.slice(0, 4)) {
    await span.hover();
    await page.waitForSelector("#tip", { visible: true });
    const tables = await page.$$eval("#tip table", (ts) => ts.map((t) =>
      [...t.rows].map((r) => [r.cells[0].textContent, r.cells[1].textContent, r.className])));
    for (const rows of tables) {
      checkEq(rows, expectedRows(lp.tokens[k], lp.token_logprobs[k], lp.top_logprobs[k]),
              `tooltip of token ${k}`);
      k++;
    }
  }
  check(k >= 4, "four tokens hovered", k);
  await page.screenshot({ path: path.join(ARTIFACTS, "playground.png") });
  await page.mouse.move(1, 1);

  // A stop string, and Ctrl+Enter from the prompt box.
  const stop = shown.slice(Math.floor(shown.length / 2)).match(/[A-Za-z]{2,}/);
  if (check(stop, "a word in the middle of the output to stop at", shown)) {
    const s2 = { ...s, stop: [stop[0]] };
    await setSampling(page, s2);
    await page.focus("#prompt");
    await page.keyboard.down("Control");
    await page.keyboard.press("Enter");
    await page.keyboard.up("Control");
    await waitDone(page);
    const want2 = (await api(srv, "POST", "/v1/completions", { prompt, ...s2 })).json.choices[0];
    checkEq(await text(page, "#output"), want2.text, "with a stop string: the API's answer");
    checkEq(await text(page, "#finish"), "stop", "with a stop string: finish reason");
  }

  // Stop on a long generation: the server sees the disconnect and frees the KV blocks.
  const idle = (m) => m.nano_vllm_num_requests_running === 0 && m.nano_vllm_num_requests_waiting === 0;
  const aborted = 'nano_vllm_request_success_total{finished_reason="abort"}';
  const base = await waitMetrics(srv, idle);
  await setSampling(page, { max_tokens: 8000, temperature: 1, top_p: 1, top_k: 0, seed: 7 });
  await page.click("#generate");
  await page.waitForFunction(() => document.getElementById("output").textContent.length > 20);
  const during = await metrics(srv);
  check(during.nano_vllm_num_requests_running === 1 && during.nano_vllm_kv_cache_blocks_used > 0,
        "the long generation runs and holds KV blocks", during.nano_vllm_num_requests_running);
  const tStop = Date.now();
  await page.click("#stop");
  await page.waitForFunction(() => document.getElementById("finish").textContent === "stopped");
  check(!(await page.$eval("#generate", (b) => b.disabled)), "Generate is enabled again after Stop");
  const after = await waitMetrics(srv, (m) => idle(m) && (m[aborted] || 0) > (base[aborted] || 0));
  checkEq(after.nano_vllm_num_requests_running, 0, "Stop: no request running on the server");
  checkEq(after.nano_vllm_kv_cache_blocks_used, base.nano_vllm_kv_cache_blocks_used,
          "Stop: the KV blocks are back");
  checkEq(after[aborted], (base[aborted] || 0) + 1, "Stop: the request counted as aborted");
  const n = Number(await text(page, "#n-completion"));
  check(n > 0 && n < 8000, "Stop: the page counted part of the 8000 tokens", n);
  console.log(`stop: ${n} tokens streamed; the server idle ${Date.now() - tStop} ms after Stop`);

  // Escape stops too.
  await page.click("#generate");
  await page.waitForFunction(() => document.getElementById("output").textContent.length > 20);
  await page.keyboard.press("Escape");
  await page.waitForFunction(() => document.getElementById("finish").textContent === "stopped");
  const again = await waitMetrics(srv, (m) => idle(m) && m[aborted] > after[aborted]);
  checkEq([again.nano_vllm_num_requests_running, again[aborted]], [0, after[aborted] + 1],
          "Escape: the request ended on the server as aborted");

  // Phone width: one column, nothing wider than the screen.
  await page.setViewport({ width: 390, height: 844 });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 0, "no horizontal scrolling at 390 px", overflow);
  const cols = await page.$eval(".layout", (el) => getComputedStyle(el).gridTemplateColumns.split(" ").length);
  checkEq(cols, 1, "one column at 390 px");
  await page.screenshot({ path: path.join(ARTIFACTS, "playground-phone.png"), fullPage: true });

  checkEq(page.problems, [], "no console error or CSP violation on the page");
  await page.close();
}

// ---- the API key ----

async function testKey(srv, key) {
  const r = await api(srv, "GET", "/");
  check(r.status === 200 && !r.text.includes("tiny-f32"), "the page is served without a key, nothing about the model in it");
  checkEq((await api(srv, "GET", "/v1/models")).status, 401, "/v1/models without the key");

  const page = await newPage();
  await page.goto(srv.base + "/");
  await page.waitForSelector("#key-form", { visible: true });
  check(await hidden(page, "#app"), "no playground before a key works");
  check(!(await page.content()).includes("tiny-f32"), "the page shows nothing about the model before a key works");

  await page.type("#key", "wrong-key");
  await page.keyboard.press("Enter");
  await page.waitForFunction(() => document.getElementById("key-error").textContent !== "");
  checkEq(await text(page, "#key-error"), "That key was refused.", "a wrong key is refused");
  check(await hidden(page, "#app"), "no playground with a wrong key");
  check(!(await page.content()).includes("tiny-f32"), "nothing about the model with a wrong key");

  await page.type("#key", key);
  await page.click("#key-form button");
  await page.waitForSelector("#app", { visible: true });
  checkEq(await text(page, "#model-name"), "tiny-f32", "with the right key the page names the model");
  const card = (await api(srv, "GET", "/v1/models", undefined, { Authorization: `Bearer ${key}` })).json.data[0];
  checkEq(card.capabilities, ["completion"], "without a chat template the model cannot chat");
  check(await hidden(page, "#chat-choice"), "without a chat template the page offers no chat mode");
  check(await hidden(page, "#chat-pane"), "without a chat template the chat pane stays hidden");
  check(await hidden(page, "#key-form"), "the key form is gone");

  const s = { max_tokens: 6, temperature: 0.7, top_p: 1, top_k: 0, seed: 5 };
  await typePrompt(page, "prompt", "Hello");
  await setSampling(page, s);
  await page.click("#generate");
  await waitDone(page);
  const want = (await api(srv, "POST", "/v1/completions", { prompt: "Hello", ...s },
                          { Authorization: `Bearer ${key}` })).json;
  checkEq(await text(page, "#output"), want.choices[0].text, "with the key: the API's answer");

  // The key lasts for the tab (sessionStorage): a reload goes straight to the playground.
  await page.reload();
  await page.waitForSelector("#app", { visible: true });
  // The probes without a key and with the wrong one are 401s: Chromium logs those.
  const other = page.problems.filter((p) => !/status of 401/.test(p));
  checkEq(other, [], "no console error or CSP violation but the 401s");
  await page.close();
}

// ---- chat mode ----

// The template the main server is given (--chat-template FILE): plain-text markers, since the
// tiny GPT-2 vocabulary has no special tokens.
const CHAT_TEMPLATE = "{% for m in messages %}{{ '### ' + m['role'] + '\\n' + m['content'] + '\\n' }}" +
  "{% endfor %}{% if add_generation_prompt %}{{ '### assistant\\n' }}{% endif %}";

// The page in chat mode against the real /v1/chat/completions: each streamed reply equals the
// API's answer for the same conversation and settings, the second turn sends the whole
// conversation, the tooltips show the API's top_logprobs, a refused message is taken back,
// and Stop ends the request on the server.
async function testChatPage(srv) {
  const model = (await api(srv, "GET", "/v1/models")).json.data[0];
  checkEq(model.capabilities, ["completion", "chat"], "with a chat template the model can chat");
  const page = await newPage();
  await page.setViewport({ width: 1000, height: 640 });
  const bodies = [];
  page.on("request", (req) => {
    if (new URL(req.url()).pathname === "/v1/chat/completions") bodies.push(JSON.parse(req.postData()));
  });
  await page.goto(srv.base + "/");
  await page.waitForSelector("#chat-choice", { visible: true });
  await page.click("#chat-choice input");
  check(await hidden(page, "#prompt"), "chat mode hides the prompt box");
  checkEq(await text(page, "#generate"), "Send", "chat mode's button");
  const system = "Be brief.";
  const s = { max_tokens: 16, temperature: 0.9, top_p: 0.95, top_k: 40, seed: 4321 };
  await typePrompt(page, "system", system);
  await setSampling(page, s);
  const reply = async (messages) =>
    (await api(srv, "POST", "/v1/chat/completions",
               { model: model.id, messages, ...s, logprobs: true, top_logprobs: 5 })).json;
  const shownReplies = () => page.$$eval("#conversation li.assistant .text", (els) => els.map((e) => e.textContent));

  // The first turn, sent with Ctrl+Enter.
  await page.type("#message", "Hi there");
  await page.keyboard.down("Control");
  await page.keyboard.press("Enter");
  await page.keyboard.up("Control");
  await waitDone(page);
  const turn1 = [{ role: "system", content: system }, { role: "user", content: "Hi there" }];
  const want1 = await reply(turn1);
  const c1 = want1.choices[0];
  const [shown1] = await shownReplies();
  checkEq(shown1, c1.message.content, "chat: the streamed reply equals the API's answer");
  check(shown1.length > 0, "chat: the page shows a reply", shown1);
  checkEq(await text(page, "#n-completion"), String(want1.usage.completion_tokens), "chat: completion tokens");
  checkEq(await text(page, "#n-prompt"), String(want1.usage.prompt_tokens), "chat: prompt tokens");
  checkEq(await text(page, "#finish"), c1.finish_reason, "chat: finish reason");
  const b = bodies[0] || {};
  checkEq(b.messages, turn1, "chat: the first request's messages");
  check(b.stream === true && b.stream_options && b.stream_options.include_usage === true &&
        b.max_tokens === s.max_tokens && b.seed === s.seed && b.logprobs === true &&
        b.top_logprobs === 5 && b.model === model.id, "chat: the request's fields", b);

  // Hovering a token of the reply shows the API's top_logprobs for it.
  const lp = c1.logprobs.content;
  const spans = await page.$$("#conversation .assistant span[data-i]");
  let k = 0;
  for (const span of spans.slice(0, 3)) {
    await span.hover();
    await page.waitForSelector("#tip", { visible: true });
    const tables = await page.$$eval("#tip table", (ts) => ts.map((t) =>
      [...t.rows].map((r) => [r.cells[0].textContent, r.cells[1].textContent, r.className])));
    for (const rows of tables) {
      const top = Object.fromEntries(lp[k].top_logprobs.map((t) => [t.token, t.logprob]));
      checkEq(rows, expectedRows(lp[k].token, lp[k].logprob, top), `chat: tooltip of token ${k}`);
      k++;
    }
  }
  check(k >= 3, "chat: three tokens hovered", k);
  await page.mouse.move(1, 1);

  // The second turn sends the whole conversation: the server counts it as /tokenize does.
  await page.type("#message", "Tell me more");
  await page.click("#generate");
  await waitDone(page);
  const turn2 = [...turn1, { role: "assistant", content: shown1 }, { role: "user", content: "Tell me more" }];
  checkEq((bodies[1] || {}).messages, turn2, "chat: the second request sends the whole conversation");
  const want2 = await reply(turn2);
  const shown2 = (await shownReplies())[1];
  checkEq(shown2, want2.choices[0].message.content, "chat: the second reply equals the API's answer");
  const count = (await api(srv, "POST", "/tokenize", { model: model.id, messages: turn2 })).json.count;
  checkEq([await text(page, "#n-prompt"), String(want2.usage.prompt_tokens)], [String(count), String(count)],
          "chat: the second turn's prompt tokens are the whole conversation's (/tokenize)");
  const convo = await page.$$eval("#conversation li", (lis) => lis.map((li) =>
    [li.className, li.querySelector(".text").textContent]));
  checkEq(convo, [["user", "Hi there"], ["assistant", shown1], ["user", "Tell me more"], ["assistant", shown2]],
          "chat: the conversation as shown");
  await page.screenshot({ path: path.join(ARTIFACTS, "playground-chat.png") });

  // A message the server refuses (too long for the context) is taken back into the message box.
  await setValue(page, "max-tokens", model.max_model_len); // with the prompt: too long
  await page.type("#message", "Third");
  await page.click("#generate");
  await page.waitForFunction(() => document.getElementById("status").classList.contains("bad"));
  check(/maximum context length/.test(await text(page, "#status")), "chat: the server's error shown",
        await text(page, "#status"));
  checkEq(await page.$eval("#message", (el) => el.value), "Third", "chat: the refused message is back");
  checkEq(await page.$$eval("#conversation li", (lis) => lis.length), 4, "chat: the conversation as it was");

  // Stop on a long reply: the server sees the disconnect and frees the KV blocks.
  const idle = (m) => m.nano_vllm_num_requests_running === 0 && m.nano_vllm_num_requests_waiting === 0;
  const aborted = 'nano_vllm_request_success_total{finished_reason="abort"}';
  const base = await waitMetrics(srv, idle);
  await page.click("#clear");
  await setSampling(page, { max_tokens: 8000, temperature: 1, top_p: 1, top_k: 0, seed: 9 });
  await setValue(page, "message", "");
  await page.type("#message", "Go on");
  await page.click("#generate");
  // The conversation scrolls in its own box once full, so the Stop button below it stays put.
  await page.waitForFunction(() => {
    const list = document.getElementById("conversation");
    return list.scrollHeight > list.clientHeight + 50;
  });
  const box1 = await (await page.$("#stop")).boundingBox();
  await sleep(200);
  const box2 = await (await page.$("#stop")).boundingBox();
  checkEq(box2, box1, "chat: the Stop button stays put while the reply streams");
  const during = await metrics(srv);
  check(during.nano_vllm_num_requests_running === 1 && during.nano_vllm_kv_cache_blocks_used > 0,
        "chat: the long reply runs and holds KV blocks", during.nano_vllm_num_requests_running);
  await page.click("#stop");
  await page.waitForFunction(() => document.getElementById("finish").textContent === "stopped");
  const after = await waitMetrics(srv, (m) => idle(m) && (m[aborted] || 0) > (base[aborted] || 0));
  checkEq([after.nano_vllm_num_requests_running, after.nano_vllm_kv_cache_blocks_used, after[aborted]],
          [0, base.nano_vllm_kv_cache_blocks_used, (base[aborted] || 0) + 1],
          "chat Stop: nothing running, the KV blocks back, counted as aborted");
  check(!(await page.$eval("#generate", (el) => el.disabled)), "chat: Send is enabled again after Stop");

  const problems = page.problems.filter((p) => !/status of 400/.test(p));
  checkEq(problems, [], "chat: no console error or CSP violation but the 400");
  await page.close();
}

// ---- run ----

const servers = [];
try {
  const template = path.join(TMP, "chat.jinja");
  writeFileSync(template, CHAT_TEMPLATE);
  const main = new Server(LONG_MODEL, ["--chat-template", template]);
  const keyed = new Server(MODEL, ["--api-key", "ui-test-key"]);
  const noUi = new Server(MODEL, ["--no-ui"]);
  servers.push(main, keyed, noUi);
  [browser] = await Promise.all([launch(), ...servers.map((s) => s.ready)]);
  phase("browser started, servers ready");

  for (const p of ["/", "/index.html"]) {
    const r = await api(noUi, "GET", p);
    check(r.status === 404 && r.json && r.json.error.code === "not_found", `--no-ui: GET ${p} is a 404`, r.status);
  }
  checkEq((await api(noUi, "GET", "/health")).status, 200, "--no-ui: the API still answers");

  await testPage(main);
  phase("page");
  await testKey(keyed, "ui-test-key");
  phase("key");
  await testChatPage(main);
  phase("chat");
} catch (e) {
  failures++;
  console.error("FAIL " + (e.stack || e));
} finally {
  if (browser) await browser.close();
  for (const s of servers) await s.stop();
}
console.log(`ui: ${failures} failure(s) in ${((Date.now() - T0) / 1000).toFixed(1)} s; screenshots in ${ARTIFACTS}`);
process.exit(failures ? 1 : 0);
