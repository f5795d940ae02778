// Chat templates where transformers saves them, rendered and encoded as apply_chat_template does,
// over a real byte-level BPE tokenizer.json (test/helpers/hf-tokenizer.ts).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdirSync, mkdtempSync, rmSync, unlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ChatTemplate, type ChatMessage } from '../../src/llm/chat-template.ts'
import { loadPromptEncoder } from '../../src/llm/prompt-encoder.ts'
import { loadTokenizer } from '../../src/llm/tokenizer.ts'
import { validateGenerate, type ChatPromptRequest } from '../../src/llm/validate.ts'
import { CHATML_TOOLS_TEMPLATE, HF_IDS, writeHfTokenizer } from '../helpers/hf-tokenizer.ts'

const LIMITS = { maxInputTokens: 400, maxTotalTokens: 512, maxStopSequences: 4, maxTopNTokens: 5, maxBestOf: 2 }

function tempDir(t: { after: (fn: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'llm-chat-tpl-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

const HI: ChatMessage[] = [{ role: 'user', content: 'hi' }]

test('chat_template.jinja beats chat_template.json beats tokenizer_config.json', async (t) => {
  const dir = tempDir(t)
  writeHfTokenizer(dir, { chat_template: 'CONFIG {{ messages[0].content }}' })
  writeFileSync(join(dir, 'chat_template.json'), JSON.stringify({ chat_template: 'JSON {{ messages[0].content }}' }))
  writeFileSync(join(dir, 'chat_template.jinja'), 'JINJA {{ messages[0].content }}')
  const render = async () => {
    const tok = await loadTokenizer(join(dir, 'model.onnx'))
    return { text: new ChatTemplate(tok.config).render(HI), file: tok.source?.chatTemplateFile }
  }
  assert.deepEqual(await render(), { text: 'JINJA hi', file: join(dir, 'chat_template.jinja') })
  unlinkSync(join(dir, 'chat_template.jinja'))
  assert.deepEqual(await render(), { text: 'JSON hi', file: join(dir, 'chat_template.json') })
  unlinkSync(join(dir, 'chat_template.json'))
  assert.deepEqual(await render(), { text: 'CONFIG hi', file: join(dir, 'tokenizer_config.json') })
})

test('named templates: "tool_use" when tools are passed, "default" otherwise (list form and additional_chat_templates/)', async (t) => {
  const dir = tempDir(t)
  writeHfTokenizer(dir, {
    chat_template: [
      { name: 'tool_use', template: 'TOOLS {{ tools | length }} {{ messages[0].content }}' },
      { name: 'default', template: 'PLAIN {{ messages[0].content }}{{ tools is none }}' },
    ],
  })
  let tpl = new ChatTemplate((await loadTokenizer(join(dir, 'model.onnx'))).config)
  assert.equal(tpl.isDefault, false)
  assert.equal(tpl.render(HI), 'PLAIN hitrue', 'tools is None without tools, as transformers passes it')
  assert.equal(tpl.render(HI, true, { tools: [{ type: 'function', function: { name: 'f' } }] }), 'TOOLS 1 hi')
  // transformers >= 4.5x saves named extras beside chat_template.jinja.
  writeFileSync(join(dir, 'chat_template.jinja'), 'J {{ messages[0].content }}')
  mkdirSync(join(dir, 'additional_chat_templates'))
  writeFileSync(join(dir, 'additional_chat_templates', 'tool_use.jinja'), 'JT {{ tools[0].function.name }}')
  tpl = new ChatTemplate((await loadTokenizer(join(dir, 'model.onnx'))).config)
  assert.deepEqual(tpl.names, ['default', 'tool_use'])
  assert.equal(tpl.render(HI), 'J hi')
  assert.equal(tpl.render(HI, true, { tools: [{ type: 'function', function: { name: 'get_weather' } }] }), 'JT get_weather')
})

test('the rendered prompt gets no second BOS; text prompts follow add_bos_token over tokenizer.json', async (t) => {
  const dir = tempDir(t)
  writeHfTokenizer(dir)
  writeFileSync(join(dir, 'chat_template.jinja'), CHATML_TOOLS_TEMPLATE)
  const enc = await loadPromptEncoder(join(dir, 'model.onnx'), undefined, () => assert.fail('no warning for a model with a template'))
  const chat = validateGenerate({ messages: HI }, enc, LIMITS).inputIds
  // The template writes "<s>" itself; the tokenizer must not add another (add_special_tokens=False).
  assert.deepEqual(chat.slice(0, 2), [HF_IDS.bos, HF_IDS.imStart])
  assert.equal(chat.filter((id) => id === HF_IDS.bos).length, 1)
  assert.equal(enc.tokenizer.decode(chat, false), '<s><|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n')
  // Text prompts: tokenizer.json's post-processor adds BOS, and add_bos_token: true keeps it.
  assert.deepEqual(validateGenerate({ inputs: 'hello world' }, enc, LIMITS).inputIds, [HF_IDS.bos, 259, 264])
  // add_bos_token: false wins over the post-processor, as transformers rebuilds it from the config.
  writeHfTokenizer(dir, { add_bos_token: false })
  const noBos = await loadTokenizer(join(dir, 'model.onnx'))
  assert.deepEqual(noBos.encode('hello world'), [259, 264])
  // add_eos_token: true appends EOS.
  writeHfTokenizer(dir, { add_eos_token: true })
  assert.deepEqual((await loadTokenizer(join(dir, 'model.onnx'))).encode('hello world'), [HF_IDS.bos, 259, 264, HF_IDS.eos])
})

test('tools, assistant tool_calls and tool messages reach the template; add_generation_prompt is passed', async (t) => {
  const dir = tempDir(t)
  writeHfTokenizer(dir, { chat_template: CHATML_TOOLS_TEMPLATE })
  const enc = await loadPromptEncoder(join(dir, 'model.onnx'))
  const tools = [{ type: 'function', function: { name: 'get_weather', description: 'Weather now', parameters: { type: 'object', properties: { city: { type: 'string' } } } } }]
  const messages: ChatMessage[] = [
    { role: 'user', content: 'Weather in Paris?' },
    { role: 'assistant', content: '', tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: { city: 'Paris' } } }] },
    { role: 'tool', content: '21 C', tool_call_id: 'call_1', name: 'get_weather' },
  ]
  // Written by hand from Python Jinja's semantics with transformers' tojson (json.dumps defaults).
  const expected = '<s><|im_start|>system\n# Tools\n' +
    '{"type": "function", "function": {"name": "get_weather", "description": "Weather now", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}\n' +
    '<|im_end|>\n<|im_start|>user\nWeather in Paris?<|im_end|>\n' +
    '<|im_start|>assistant\n<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call><|im_end|>\n' +
    '<|im_start|>user\n<tool_response id="call_1" name="get_weather">21 C</tool_response><|im_end|>\n'
  assert.equal(enc.chatTemplate.render(messages, false, { tools }), expected)
  const req: ChatPromptRequest = { messages, tools }
  const ids = validateGenerate(req, enc, LIMITS).inputIds
  assert.equal(enc.tokenizer.decode(ids, false), expected + '<|im_start|>assistant\n')
  const noPrompt: ChatPromptRequest = { messages, tools, addGenerationPrompt: false }
  assert.equal(enc.tokenizer.decode(validateGenerate(noPrompt, enc, LIMITS).inputIds, false), expected)
  // vLLM's chat_template_kwargs become template variables; they cannot replace messages or tools.
  writeHfTokenizer(dir, { chat_template: '{{ greeting }} {{ messages | length }} {{ tools | length }}' })
  const kw = await loadPromptEncoder(join(dir, 'model.onnx'))
  const withKw: ChatPromptRequest = { messages: HI, tools, templateKwargs: { greeting: 'hey', messages: [], tools: [] } }
  assert.equal(kw.tokenizer.decode(validateGenerate(withKw, kw, LIMITS).inputIds, false), 'hey 1 1')
})

test('a model without a chat template: the default template, and one warning line naming the folder', async (t) => {
  const dir = tempDir(t)
  writeHfTokenizer(dir)
  const lines: string[] = []
  const enc = await loadPromptEncoder(join(dir, 'model.onnx'), undefined, (l) => lines.push(l))
  assert.equal(enc.chatTemplate.isDefault, true)
  assert.equal(lines.length, 1)
  assert.match(lines[0]!, /^ms-serve: warning: .*no chat template in .*llm-chat-tpl-.*default template/)
  assert.ok(!lines[0]!.includes('\n'))
  // The byte-level fallback (no tokenizer.json) reads the template files too.
  const bytes = tempDir(t)
  writeFileSync(join(bytes, 'chat_template.jinja'), '{{ bos_token }}[{{ messages[0].content }}]')
  const byteEnc = await loadPromptEncoder(join(bytes, 'model.onnx'), undefined, () => assert.fail('no warning'))
  assert.equal(byteEnc.tokenizer.kind, 'byte-level')
  assert.equal(byteEnc.chatTemplate.render(HI), '<s>[hi]')
})
