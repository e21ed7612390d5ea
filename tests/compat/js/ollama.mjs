// The official ollama npm client against a PeerLLM node: chat (whole, streamed),
// generate, errors, embed, structured output (`format`). See common.mjs for the protocol.
import { Ollama } from "ollama";
import { expectError, run } from "./common.mjs";

const HELLO = [{ role: "user", content: "Say hello." }];
const OPTIONS = { num_predict: 8, temperature: 0 };

function client(baseUrl) {
  return new Ollama({ host: baseUrl });
}

const cases = {
  async chat(baseUrl, model) {
    const r = await client(baseUrl).chat({ model, messages: HELLO, options: OPTIONS });
    return { model: r.model, done: r.done, done_reason: r.done_reason, role: r.message.role,
             content: r.message.content, eval_count: r.eval_count,
             prompt_eval_count: r.prompt_eval_count };
  },
  async stream(baseUrl, model) {
    const parts = [];
    for await (const part of await client(baseUrl).chat(
      { model, messages: HELLO, options: OPTIONS, stream: true })) parts.push(part);
    return { count: parts.length, done: parts.map((p) => p.done),
             text: parts.map((p) => p.message?.content ?? "").join(""),
             done_reason: parts.at(-1)?.done_reason ?? null };
  },
  async generate(baseUrl, model) {
    const c = client(baseUrl);
    const whole = await c.generate({ model, prompt: "Say hello.", options: OPTIONS });
    const parts = [];
    for await (const part of await c.generate(
      { model, prompt: "Say hello.", options: OPTIONS, stream: true })) parts.push(part);
    return { done: whole.done, response: whole.response, eval_count: whole.eval_count,
             streamed: parts.map((p) => p.response).join(""),
             streamed_done: parts.map((p) => p.done) };
  },
  async error(baseUrl, model) {
    const c = client(baseUrl);
    return {
      unknown_model: await expectError(() => c.chat(
        { model: "no-such-model", messages: HELLO, options: OPTIONS })),
      bad_option: await expectError(() => c.chat(
        { model, messages: HELLO, options: { temperature: "hot" } })),
      refused: await expectError(() => c.chat(
        { model, messages: HELLO, options: OPTIONS,
          tools: [{ type: "function", function: { name: "f", parameters: { type: "object" } } }] })),
    };
  },
  async embeddings(baseUrl, model) {
    const r = await client(baseUrl).embed({ model, input: ["hello", "world"] });
    return { count: r.embeddings.length, dims: r.embeddings.map((e) => e.length),
             prompt_eval_count: r.prompt_eval_count ?? null };
  },
  async structured(baseUrl, model) {
    const format = { type: "object", properties: { name: { type: "string" } },
                     required: ["name"] };
    const r = await client(baseUrl).chat({
      model, format, options: { temperature: 0, num_predict: 128 },
      messages: [{ role: "user", content: "Give a JSON object with a name." }] });
    return { content: r.message.content, done_reason: r.done_reason };
  },
};

await run(cases);
