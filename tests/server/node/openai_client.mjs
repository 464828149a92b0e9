// openai_client.mjs BASE_URL MODEL - one non-streaming and one streaming completion through
// the official OpenAI Node SDK. Exit status 0 when both look right; prints what went wrong.
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

const models = await client.models.list();
check(models.data.length === 1 && models.data[0].id === model, "models.list", models.data);

if (failures) process.exit(1);
console.log("openai node sdk: non-streaming, streaming and models.list all right");
