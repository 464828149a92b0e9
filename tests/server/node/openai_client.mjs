// openai_client.mjs BASE_URL MODEL - one non-streaming and one streaming completion, and one
// of each chat completion, through the official OpenAI Node SDK. Exit status 0 when all look
// right; prints what went wrong.
import OpenAI from "openai";

const [baseURL, model] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey: "sdk-test-key", maxRetries: 0, timeout: 60000 });
let failures = 0;
function check(cond, what, got) {
  if (!cond) {
    failures++;
    console.error(`FAIL ${what}: got ${JSON.stringify(got)}`);
  }
}

const plain = await client.completions.create({
  model, prompt: "Once upon a time", max_tokens: 8, temperature: 0, logprobs: 2,
});
check(plain.object === "text_completion", "object", plain.object);
check(plain.id.startsWith("cmpl-"), "id", plain.id);
check(plain.choices.length === 1 && plain.choices[0].text.length > 0, "choices", plain.choices);
check(plain.choices[0].finish_reason === "length", "finish_reason", plain.choices[0].finish_reason);
check(plain.choices[0].logprobs.tokens.length === 8, "logprobs.tokens", plain.choices[0].logprobs);
check(plain.usage.completion_tokens === 8 && plain.usage.prompt_tokens === 4, "usage", plain.usage);

const stream = await client.completions.create({
  model, prompt: "Once upon a time", max_tokens: 8, temperature: 0, stream: true,
  stream_options: { include_usage: true },
});
let text = "";
let usage = null;
let finish = null;
for await (const chunk of stream) {
  if (chunk.usage) usage = chunk.usage;
  for (const c of chunk.choices) {
    text += c.text;
    if (c.finish_reason) finish = c.finish_reason;
  }
}
check(text === plain.choices[0].text, "streamed text equals the non-streamed text", text);
check(finish === "length", "stream finish_reason", finish);
check(usage && usage.completion_tokens === 8, "stream usage", usage);

// Chat completions (the server runs with a chat template).
const messages = [
  { role: "system", content: "You are terse." },
  { role: "user", content: [{ type: "text", text: "Once upon" }, { type: "text", text: "a time" }] },
];
const chat = await client.chat.completions.create({
  model, messages, max_completion_tokens: 8, temperature: 0, logprobs: true, top_logprobs: 2,
  ignore_eos: true,
});
check(chat.object === "chat.completion", "chat object", chat.object);
check(chat.id.startsWith("chatcmpl-"), "chat id", chat.id);
const msg = chat.choices[0].message;
check(msg.role === "assistant" && msg.content.length > 0, "chat message", msg);
check(chat.choices[0].finish_reason === "length", "chat finish_reason", chat.choices[0]);
const content = chat.choices[0].logprobs.content;
check(content.length === 8 && content.every((t) => t.top_logprobs.length === 2 &&
  Array.isArray(t.bytes)), "chat logprobs", content);
check(chat.usage.completion_tokens === 8 && chat.usage.prompt_tokens > 4, "chat usage", chat.usage);

const chatStream = await client.chat.completions.create({
  model, messages, max_completion_tokens: 8, temperature: 0, ignore_eos: true, stream: true,
  stream_options: { include_usage: true },
});
let chatText = "";
let role = null;
let chatUsage = null;
let chatFinish = null;
for await (const chunk of chatStream) {
  check(chunk.object === "chat.completion.chunk", "chunk object", chunk.object);
  if (chunk.usage) chatUsage = chunk.usage;
  for (const c of chunk.choices) {
    if (c.delta.role) role = c.delta.role;
    chatText += c.delta.content ?? "";
    if (c.finish_reason) chatFinish = c.finish_reason;
  }
}
check(role === "assistant", "stream role", role);
check(chatText === msg.content, "streamed chat text equals the non-streamed one", chatText);
check(chatFinish === "length", "chat stream finish_reason", chatFinish);
check(chatUsage && chatUsage.total_tokens === chat.usage.total_tokens, "chat stream usage",
  chatUsage);

// A request the server refuses comes back as the SDK's BadRequestError naming the field.
try {
  await client.chat.completions.create({
    model, messages, tools: [{ type: "function", function: { name: "f", parameters: {} } }],
  });
  check(false, "tools refused", "accepted");
} catch (err) {
  check(err instanceof OpenAI.BadRequestError && err.param === "tools", "tools refused",
    String(err));
}

const models = await client.models.list();
check(models.data.length === 1 && models.data[0].id === model, "models.list", models.data);

if (failures) process.exit(1);
console.log("openai node sdk: completions and chat completions, non-streaming and streaming, " +
  "and models.list all right");
