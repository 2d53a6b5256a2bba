// The official SDKs through the sidecar: 20 identical JSON and 20 identical streaming calls
// (each batch must share one upstream call: one id), the Perplexity SDK, and an error status.
// Run by tests/sdk/run.sh against a running mock-provider + coalescer.
import OpenAI from 'openai';
import Perplexity from '@perplexity-ai/perplexity_ai';
const base = process.env.BASE;
const oa = new OpenAI({ apiKey: 'pplx-test', baseURL: base });
const msgs = [{ role: 'user', content: 'sdk test' }];
const many = await Promise.all(Array.from({length: 20}, () => oa.chat.completions.create({ model: 'sonar', messages: msgs })));
const ids = new Set(many.map(r => r.id));
console.log('openai json: distinct ids', ids.size);
if (ids.size !== 1) throw new Error('20 identical calls did not share one upstream call');
const streams = await Promise.all(Array.from({length: 20}, async () => {
  const s = await oa.chat.completions.create({ model: 'sonar', messages: msgs, stream: true });
  let text = ''; let n = 0;
  for await (const chunk of s) { n++; text = chunk.choices[0]?.message?.content ?? text; }
  return n + ':' + text.length;
}));
console.log('openai stream: distinct results', new Set(streams).size, streams[0]);
if (new Set(streams).size !== 1) throw new Error('streams differ');
const px = new Perplexity({ apiKey: 'pplx-test', baseURL: base });
const r = await px.chat.completions.create({ model: 'sonar', messages: msgs });
console.log('perplexity json', r.id);
const ps = await px.chat.completions.create({ model: 'sonar', messages: msgs, stream: true });
let k = 0; for await (const c of ps) k++;
console.log('perplexity stream events', k);
let status = 0;
try { await oa.chat.completions.create({ model: 'sonar', messages: msgs, mock: { status: 500 } }, { maxRetries: 0 }); } catch (e) { status = e.status; }
console.log('error status', status);
if (status !== 500) throw new Error('expected the 500 to reach the SDK');
console.log('sdk check: ok');
