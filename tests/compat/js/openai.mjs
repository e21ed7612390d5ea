// The official openai npm client against a PeerLLM node: chat (whole, streamed),
// completions, errors, embeddings, structured output. See common.mjs for the protocol.
import OpenAI from "openai";
import { expectError, run } from "./common.mjs";

const HELLO = [{ role: "user", content: "Say hello." }];

function client(baseUrl) {
  return new OpenAI({ baseURL: `${baseUrl}/v1`, apiKey: "x", maxRetries: 0 });
}

const cases = {
  async chat(baseUrl, model) {
    const r = await client(baseUrl).chat.completions.create(
      { model, messages: HELLO, max_tokens: 8, temperature: 0 });
    return { object: r.object, model: r.model, role: r.choices[0].message.role,
             content: r.choices[0].message.content, finish_reason: r.choices[0].finish_reason,
             usage: r.usage };
  },
  async stream(baseUrl, model) {
    const stream = await client(baseUrl).chat.completions.create(
      { model, messages: HELLO, max_tokens: 8, temperature: 0, stream: true,
        stream_options: { include_usage: true } });
    const chunks = [];
    for await (const chunk of stream) chunks.push(chunk);
    return { objects: [...new Set(chunks.map((c) => c.object))],
             first_role: chunks[0]?.choices[0]?.delta?.role ?? null,
             text: chunks.map((c) => c.choices[0]?.delta?.content ?? "").join(""),
             finish_reasons: chunks.filter((c) => c.choices.length).map((c) => c.choices[0].finish_reason),
             usage: chunks.at(-1)?.usage ?? null };
  },
  async completions(baseUrl, model) {
    const r = await client(baseUrl).completions.create(
      { model, prompt: "The sky is", max_tokens: 4, temperature: 0 });
    return { object: r.object, text: r.choices[0].text, usage: r.usage };
  },
  async error(baseUrl, model) {
    const c = client(baseUrl);
    return {
      unknown_model: await expectError(() => c.chat.completions.create(
        { model: "no-such-model", messages: HELLO, max_tokens: 4 })),
      n2: await expectError(() => c.chat.completions.create(
        { model, messages: HELLO, max_tokens: 4, n: 2 })),
    };
  },
  async embeddings(baseUrl, model) {
    // The client's default is base64, decoded by the client: both must work.
    const c = client(baseUrl);
    const b64 = await c.embeddings.create({ model, input: ["hello", "world"] });
    const flt = await c.embeddings.create({ model, input: "hello", encoding_format: "float" });
    return { count: b64.data.length, dims: b64.data.map((d) => d.embedding.length),
             first_b64: Array.from(b64.data[0].embedding.slice(0, 8)),
             first_float: flt.data[0].embedding.slice(0, 8), usage: b64.usage };
  },
  async structured(baseUrl, model) {
    const schema = { type: "object", properties: { name: { type: "string" } },
                     required: ["name"], additionalProperties: false };
    const r = await client(baseUrl).chat.completions.create({
      model, temperature: 0, max_tokens: 128,
      messages: [{ role: "user", content: "Give a JSON object with a name." }],
      response_format: { type: "json_schema", json_schema: { name: "person", schema, strict: true } },
    });
    return { content: r.choices[0].message.content, finish_reason: r.choices[0].finish_reason };
  },
};

await run(cases);
