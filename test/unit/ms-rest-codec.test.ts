/**
 * MindSpore REST codec: URL grammar, body checks, int/float-preserving JSON reader, `instances`
 * parsing and reply rendering. Error texts are compared exactly (spec §2.1/§2.2, reference
 * http_process.cc / restful_request.cc); vectors V2-V5 come from spec §6.
 */
import { test, describe } from 'node:test'
import assert from 'node:assert/strict'
import { ServeError } from '../../src/errors.ts'
import { Tensor, f32ToF16Bits, type Value } from '../../src/tensor.ts'
import { checkMsMethod, parseMsUrl } from '../../src/protocol/rest/ms-url.ts'
import {
  JSON_FLOAT_KINDS, MS_DEFAULT_MAX_BODY_BYTES, checkMsBodySize, compareKeys, formatDouble, parseInstances, parseJsonBody,
  renderError, renderReply, renderValue,
} from '../../src/protocol/rest/ms-json.ts'
import { collapseOutcomes, type InstanceOutcome } from '../../src/runtime/predict-outcome.ts'

const P = 'Parser request failed, '
const parse = (text: string) => parseInstances(parseJsonBody(text))
/** Parses `{"instances":{"x": <valueJson>}}` and returns x. */
const one = (valueJson: string): Value => parse(`{"instances":{"x":${valueJson}}}`)[0]!['x']!
const t = (v: Value): Tensor => { assert.ok(v instanceof Tensor); return v }
const err = (code: string, message: string) => (e: unknown) => {
  assert.ok(e instanceof ServeError, `not a ServeError: ${String(e)}`)
  assert.equal(e.message, message)
  assert.equal(e.code, code)
  return true
}
const rejects = (text: string, message: string) => assert.throws(() => parse(text), err('INVALID_REQUEST', message))
const rejectsValue = (valueJson: string, detail: string) => rejects(`{"instances":{"x":${valueJson}}}`, P + detail)
const b64 = (bytes: ArrayBufferView) => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64')
const f32 = (...xs: number[]) => Float32Array.from(xs)
/** A reply of per-instance outcomes, as the registry hands it over (after the collapse rule). */
const reply = (outcomes: InstanceOutcome[]) => renderReply(collapseOutcomes(outcomes))
const failed = (message: string): InstanceOutcome => ({ error: new ServeError('INVALID_REQUEST', message) })

describe('parseMsUrl (§2.1)', () => {
  test('name, version and method', () => {
    assert.deepEqual(parseMsUrl('POST', '/model/add:add_common'), { name: 'add', version: 0, method: 'add_common' })
    assert.deepEqual(parseMsUrl('POST', '/model/add/version/2:add_common'), { name: 'add', version: 2, method: 'add_common' })
    assert.deepEqual(parseMsUrl('POST', '/version/0/model/add:add_common'), { name: 'add', version: 0, method: 'add_common' })
    assert.deepEqual(parseMsUrl('POST', '/model/add:add_common?x=1&version=3'), { name: 'add', version: 0, method: 'add_common' })
    assert.deepEqual(parseMsUrl('POST', 'http://h:5500/model/add/version/1:m'), { name: 'add', version: 1, method: 'm' })
    assert.deepEqual(parseMsUrl('POST', '/model/my%20net:pre%3Adict'), { name: 'my net', version: 0, method: 'pre:dict' })
    assert.deepEqual(parseMsUrl('POST', '/model/bad%zz:m'), { name: 'bad%zz', version: 0, method: 'm' })
  })
  test('keywords are whole segments: servables named version/conversion/model work', () => {
    assert.deepEqual(parseMsUrl('POST', '/model/version:m'), { name: 'version', version: 0, method: 'm' })
    assert.deepEqual(parseMsUrl('POST', '/model/conversion:predict'), { name: 'conversion', version: 0, method: 'predict' })
    assert.deepEqual(parseMsUrl('POST', '/model/conversion/version/3:predict'), { name: 'conversion', version: 3, method: 'predict' })
    assert.deepEqual(parseMsUrl('POST', '/model/model:m'), { name: 'model', version: 0, method: 'm' })
  })
  test('version parsing follows std::stol (leading integer, sign, range)', () => {
    assert.equal(parseMsUrl('POST', '/model/a/version/12abc:m').version, 12)
    assert.equal(parseMsUrl('POST', '/model/a/version/+7:m').version, 7)
    assert.equal(parseMsUrl('POST', '/model/a/version/-0:m').version, 0)
    assert.equal(parseMsUrl('POST', '/model/a/version/4294967294:m').version, 4294967294)
  })
  test('errors', () => {
    assert.throws(() => parseMsUrl('GET', '/model/add:add_common'), err('METHOD_NOT_ALLOWED', 'http message only support POST right now'))
    assert.throws(() => checkMsMethod('PUT'), err('METHOD_NOT_ALLOWED', 'http message only support POST right now'))
    checkMsMethod('POST')
    const model = 'please check url, the keyword:[model] must contain.'
    assert.throws(() => parseMsUrl('POST', '/x/:add_common'), err('INVALID_REQUEST', model))
    assert.throws(() => parseMsUrl('POST', '/model/:add_common'), err('INVALID_REQUEST', model))
    assert.throws(() => parseMsUrl('POST', '/models/add:m'), err('INVALID_REQUEST', model))
    const method = 'please check url, the keyword:[service method] must contain.'
    assert.throws(() => parseMsUrl('POST', '/model/add'), err('INVALID_REQUEST', method))
    assert.throws(() => parseMsUrl('POST', '/model/add:'), err('INVALID_REQUEST', method))
    assert.throws(() => parseMsUrl('POST', '/model/add?q=a:b'), err('INVALID_REQUEST', method))
    const range = 'please check url, version number range failed, request version number '
    assert.throws(() => parseMsUrl('POST', '/model/add/version/-1:m'), err('INVALID_REQUEST', range + '-1'))
    assert.throws(() => parseMsUrl('POST', '/model/add/version/4294967295:m'), err('INVALID_REQUEST', range + '4294967295'))
    assert.throws(() => parseMsUrl('POST', '/model/add/version/99999999999999999999:m'), err('INVALID_REQUEST', range + '99999999999999999999'))
    const value = 'please check url, the keyword:[version] value invalid, request version number '
    assert.throws(() => parseMsUrl('POST', '/model/add/version/abc:m'), err('INVALID_REQUEST', value + 'abc'))
    assert.throws(() => parseMsUrl('POST', '/model/add/version/:m'), err('INVALID_REQUEST', value))
    assert.throws(() => parseMsUrl('POST', '/model/add/version:m'), err('INVALID_REQUEST', value))
  })
})

describe('checkMsBodySize', () => {
  test('empty and oversized bodies', () => {
    assert.equal(MS_DEFAULT_MAX_BODY_BYTES, 104857600)
    checkMsBodySize(1)
    checkMsBodySize(MS_DEFAULT_MAX_BODY_BYTES)
    assert.throws(() => checkMsBodySize(0), err('INVALID_REQUEST', 'http message invalid'))
    assert.throws(() => checkMsBodySize(MS_DEFAULT_MAX_BODY_BYTES + 1), err('PAYLOAD_TOO_LARGE', 'http message is bigger than 104857600'))
    assert.throws(() => checkMsBodySize(2_000_000, 1048576), err('PAYLOAD_TOO_LARGE', 'http message is bigger than 1048576'))
  })
})

describe('parseJsonBody', () => {
  const kinds = (v: unknown) => (v as Record<symbol, unknown>)[JSON_FLOAT_KINDS]
  test('agrees with JSON.parse on values', () => {
    const docs = ['{"a":[1,2.5,-3e2,0.1],"b":{"c":"x\\"y\\\\z\\n\\u00e9\\ud83d\\ude00"},"d":[true,false,null],"e":[]}',
      '[[1.5,2.5],[3.5,4.5]]', '  {"instances" : [ { "x" : [ 1 , 2 ] } ] }\n', '"s"', '-12.5e-3', '[{"b64":"QUJD"}]', '[1, 2.0, 3]']
    for (const d of docs) assert.equal(JSON.stringify(parseJsonBody(d)), JSON.stringify(JSON.parse(d)), d)
  })
  test('keeps the int/float distinction', () => {
    assert.equal(kinds(parseJsonBody('[1,2]')), undefined)
    assert.equal(kinds(parseJsonBody('[1.0,2.0]')), true)
    assert.equal(kinds(parseJsonBody('[1.5,2.5]')), undefined) // non-integral values need no mark
    assert.equal(kinds(parseJsonBody('[1e2,3E1,0.5]')), true)
    assert.deepEqual(kinds(parseJsonBody('[1.5,2]')), [1, 0])
    assert.deepEqual(kinds(parseJsonBody('[2,"a",1.0,[3]]')), [0, 0, 1, 0])
    assert.deepEqual(kinds(parseJsonBody('{"a":2.0,"b":2}')), new Set(['a']))
    // duplicate keys: the last value wins (nlohmann), and so does its kind
    const dup = parseJsonBody('{"a":2.0,"a":3}') as Record<string, unknown>
    assert.equal(dup['a'], 3)
    assert.equal(kinds(dup), undefined)
  })
  test('integers: -0, bigints for int64/uint64, floats beyond', () => {
    assert.ok(Object.is((parseJsonBody('[-0]') as number[])[0], -0))
    assert.deepEqual(parseJsonBody('[9007199254740993,-9223372036854775808,18446744073709551615]'), [9007199254740993n, -9223372036854775808n, 18446744073709551615n])
    const over = parseJsonBody('[18446744073709551616]') as number[]
    assert.equal(over[0], 18446744073709551616)
    assert.equal(kinds(over), true)
  })
  test('__proto__ is an own key, BOM is skipped', () => {
    const o = parseJsonBody('{"__proto__":{"x":1}}') as Record<string, unknown>
    assert.equal(Object.getPrototypeOf(o), Object.prototype)
    assert.deepEqual(Object.keys(o), ['__proto__'])
    assert.deepEqual(parseJsonBody('\ufeff[1]'), [1])
  })
  test('malformed JSON: Illegal JSON format. + nlohmann-style detail', () => {
    const bad = (text: string, detail: string) => assert.throws(() => parseJsonBody(text), err('INVALID_REQUEST', 'Illegal JSON format.' + detail))
    const pe = '[json.exception.parse_error.101] parse error at line '
    bad('{"a":}', `${pe}1, column 6: syntax error while parsing value - unexpected '}'; expected '[', '{', or a literal`)
    bad('[1,]', `${pe}1, column 4: syntax error while parsing value - unexpected ']'; expected '[', '{', or a literal`)
    bad('{', `${pe}1, column 2: syntax error while parsing object key - unexpected end of input; expected string literal`)
    bad('{"a" 1}', `${pe}1, column 6: syntax error while parsing object separator - unexpected number literal; expected ':'`)
    bad('{"a":1 "b"}', `${pe}1, column 8: syntax error while parsing object - unexpected string literal; expected '}'`)
    bad('[1 2]', `${pe}1, column 4: syntax error while parsing array - unexpected number literal; expected ']'`)
    bad('[01]', `${pe}1, column 3: syntax error while parsing array - unexpected number literal; expected ']'`)
    // the reference cuts the message right after "invalid literal"
    bad('{"instances":tru}', `${pe}1, column 17: syntax error while parsing value - invalid literal`)
    bad('{"a":1}\n x', `${pe}2, column 2: syntax error while parsing value - invalid literal`)
    bad('"abc', `${pe}1, column 4: syntax error while parsing value - invalid string: missing closing quote; last read: '"abc'`)
    bad('"a\tb"', `${pe}1, column 3: syntax error while parsing value - invalid string: control character U+0009 (HT) must be escaped to \\u0009 or \\t; last read: '"a<U+0009>'`)
    bad('"\\x"', `${pe}1, column 3: syntax error while parsing value - invalid string: forbidden character after backslash; last read: '"\\x'`)
    bad('"\\u12"', `${pe}1, column 6: syntax error while parsing value - invalid string: '\\u' must be followed by 4 hex digits; last read: '"\\u12"'`)
    bad('"\\udc00"', `${pe}1, column 7: syntax error while parsing value - invalid string: surrogate U+DC00..U+DFFF must follow U+D800..U+DBFF; last read: '"\\udc00'`)
    bad('-x', `${pe}1, column 2: syntax error while parsing value - invalid number; expected digit after '-'; last read: '-x'`)
    bad('1.e5', `${pe}1, column 3: syntax error while parsing value - invalid number; expected digit after '.'; last read: '1.e'`)
    bad('1e+', `${pe}1, column 4: syntax error while parsing value - invalid number; expected digit after exponent sign; last read: '1e+'`)
    bad('[1e400]', "[json.exception.out_of_range.406] number overflow parsing '1e400'")
    bad('[1.5,-1e999]', "[json.exception.out_of_range.406] number overflow parsing '-1e999'")
    bad('[' .repeat(1001) + ']'.repeat(1001), 'nesting depth exceeds 1000')
  })
})

describe('parseInstances: value forms (§2.2)', () => {
  test('scalars: int -> int32 (truncated), float -> float32, bool, string', () => {
    assert.deepEqual(t(one('3')), new Tensor('int32', [], Int32Array.of(3)))
    assert.deepEqual(t(one('-0')), new Tensor('int32', [], Int32Array.of(0)))
    assert.deepEqual(t(one('2147483648')).data, Int32Array.of(-2147483648))
    assert.deepEqual(t(one('4294967297')).data, Int32Array.of(1))
    assert.deepEqual(t(one('9223372036854775807')).data, Int32Array.of(-1))
    assert.deepEqual(t(one('1.5')), new Tensor('float32', [], f32(1.5)))
    assert.deepEqual(t(one('2.0')), new Tensor('float32', [], f32(2)))
    assert.deepEqual(t(one('1e2')), new Tensor('float32', [], f32(100)))
    assert.deepEqual(t(one('6.6')).data, f32(6.6))
    assert.deepEqual(t(one('true')), new Tensor('bool', [], Uint8Array.of(1)))
    assert.deepEqual(t(one('false')), new Tensor('bool', [], Uint8Array.of(0)))
    assert.equal(one('"abc"'), 'abc')
    assert.equal(one('""'), '')
  })
  test('nested arrays: dtype from the first leaf, shape from first elements', () => {
    assert.deepEqual(t(one('[[1,2],[3,4]]')), new Tensor('int32', [2, 2], Int32Array.of(1, 2, 3, 4)))
    assert.deepEqual(t(one('[[1.0,2.0],[3.0,4.0]]')), new Tensor('float32', [2, 2], f32(1, 2, 3, 4)))
    assert.deepEqual(t(one('[[[1.5],[2.5]]]')), new Tensor('float32', [1, 2, 1], f32(1.5, 2.5)))
    assert.deepEqual(t(one('[true,false,true]')), new Tensor('bool', [3], Uint8Array.of(1, 0, 1)))
    assert.deepEqual(t(one('[[false]]')), new Tensor('bool', [1, 1], Uint8Array.of(0)))
    assert.deepEqual(t(one('[1,2147483648,-1]')).data, Int32Array.of(1, -2147483648, -1))
    assert.deepEqual(t(one('[9223372036854775807,1]')).data, Int32Array.of(-1, 1))
  })
  test('one-item string/bytes arrays', () => {
    assert.equal(one('["abc"]'), 'abc')
    assert.deepEqual(one('[{"b64":"QUJD"}]'), new Uint8Array([65, 66, 67]))
    assert.equal(one('[{"b64":"QUJD","type":"str"}]'), 'ABC')
    assert.equal(one('[{"b64":"QUJD","type":"str","other":1}]'), 'ABC') // array items skip the object key checks, like the reference
  })
  test('{"b64"} -> bytes; typed b64 for every type name', () => {
    assert.deepEqual(one('{"b64":"QUJD"}'), new Uint8Array([65, 66, 67]))
    assert.deepEqual(one('{"b64":""}'), new Uint8Array(0))
    assert.deepEqual(one('{"b64":"QUJD","shape":[1]}'), new Uint8Array([65, 66, 67]))
    assert.deepEqual(one('{"b64":"QUJD","type":"bytes","shape":[]}'), new Uint8Array([65, 66, 67]))
    assert.equal(one('{"b64":"QUJD","type":"str"}'), 'ABC')
    assert.equal(one(`{"b64":"${Buffer.from('héllo').toString('base64')}","type":"str","shape":[1]}`), 'héllo')
    const cases: [string, Tensor][] = [
      ['int8', new Tensor('int8', [2], Int8Array.of(-1, 5))], ['int16', new Tensor('int16', [3, 2], Int16Array.of(1, 1, 2, 3, 3, 4))],
      ['int32', new Tensor('int32', [2], Int32Array.of(-7, 1 << 30))], ['int64', new Tensor('int64', [2], BigInt64Array.of(-5n, 1n << 62n))],
      ['uint8', new Tensor('uint8', [2], Uint8Array.of(0, 255))], ['uint16', new Tensor('uint16', [1], Uint16Array.of(65535))],
      ['uint32', new Tensor('uint32', [2], Uint32Array.of(1, 4294967295))], ['uint64', new Tensor('uint64', [1], BigUint64Array.of(18446744073709551615n))],
      ['float32', new Tensor('float32', [2, 2], f32(1, 2, 3, 4))], ['fp32', new Tensor('float32', [1], f32(0.5))],
      ['float64', new Tensor('float64', [2], Float64Array.of(0.1, -2))], ['fp64', new Tensor('float64', [], Float64Array.of(3.25))],
      ['float16', new Tensor('float16', [2], Uint16Array.of(f32ToF16Bits(1.5), f32ToF16Bits(-2)))], ['fp16', new Tensor('float16', [1], Uint16Array.of(0x3c00))],
      ['bool', new Tensor('bool', [2], Uint8Array.of(0, 1))],
    ]
    for (const [type, want] of cases) {
      const got = t(one(`{"b64":"${b64(want.data)}","type":"${type}","shape":${JSON.stringify(want.shape)}}`))
      assert.deepEqual(got, want, type)
      assert.equal(got.data.byteOffset, 0) // own, aligned buffer (not a slice of Buffer's pool)
    }
    // docs example; default shape is [] (code), not [1] (docs)
    assert.deepEqual(t(one('{"b64":"AQABAAIAAwADAAQA","type":"int16","shape":[3,2]}')).toArray(), [1, 1, 2, 3, 3, 4])
    assert.deepEqual(t(one('{"b64":"AACAPw==","type":"fp32"}')), new Tensor('float32', [], f32(1)))
    assert.deepEqual(t(one('{"b64":"","type":"int32","shape":[0]}')), new Tensor('int32', [0], new Int32Array(0)))
    assert.deepEqual(t(one('{"b64":"","type":"int32","shape":[1,0]}')).shape, [1, 0])
  })
  test('instances as an object or an array; keys sorted; extra top-level keys ignored', () => {
    const one1 = parse('{"other":1,"instances":{"b":1,"a":"s"}}')
    assert.equal(one1.length, 1)
    assert.deepEqual(Object.keys(one1[0]!), ['a', 'b'])
    const many = parse('{"instances":[{"x":1},{"x":2.5},{"x":"s"}]}')
    assert.deepEqual(many.map((i) => i['x']), [new Tensor('int32', [], Int32Array.of(1)), new Tensor('float32', [], f32(2.5)), 's'])
    assert.equal((parse('{"instances":{"__proto__":1}}')[0]!['__proto__'] as Tensor).dtype, 'int32')
  })
  test('accepts plain JSON.parse output (int/float guessed from the value)', () => {
    const r = parseInstances(JSON.parse('{"instances":{"a":[1.5,2.5],"b":[1,2],"c":3.5,"d":2.0}}'))[0]!
    assert.equal(t(r['a']!).dtype, 'float32')
    assert.equal(t(r['b']!).dtype, 'int32')
    assert.equal(t(r['c']!).dtype, 'float32')
    assert.equal(t(r['d']!).dtype, 'int32') // JSON.parse cannot tell 2.0 from 2: use parseJsonBody
  })
})

describe('parseInstances: errors (§2.2, exact texts)', () => {
  test('top level and instances', () => {
    const zero = P + "key 'instances' expects to exist once, but actually 0 times"
    rejects('{}', zero)
    rejects('[{"instances":1}]', zero)
    rejects('{"Instances":{"x":1}}', zero)
    assert.throws(() => parseInstances(null), err('INVALID_REQUEST', zero))
    rejects('{"instances":[]}', P + 'instances value is array type, but no value')
    for (const v of ['1', 'null', '"x"', '[1]', '[[{"x":1}]]']) rejects(`{"instances":${v}}`, P + 'instances no key mode is not supported')
    rejects('{"instances":[{"x":1},2]}', P + 'json array, instance is not object type')
    rejects('{"instances":[{"x":1},{}]}', P + 'json array, instance is object type, but no value')
    rejects('{"instances":{}}', P + 'json object, value is empty')
    rejects('{"instances":{"":1}}', P + 'string key is empty')
    rejectsValue('null', 'json value is null, it is not supported')
    // errors come from the first failing key in sorted order, then from later instances
    rejects('{"instances":{"b":null,"a":[]}}', P + 'json array, shape is empty')
    rejects('{"instances":[{"x":1},{"x":null}]}', P + 'json value is null, it is not supported')
  })
  test('arrays', () => {
    rejectsValue('[]', 'json array, shape is empty')
    rejectsValue('[[]]', 'json array, data type is unknown')
    rejectsValue('[[],[]]', 'json array, data type is unknown')
    rejectsValue('[null]', 'json array, data type is unknown')
    rejectsValue('[{"b64":"","type":"nope"}]', 'json array, data type is unknown')
    const notEqual = 'json array, elements type is not equal'
    for (const v of ['[1.5,2]', '[1,2.5]', '[[1,2],[3,4.5]]', '[[false,true],[1,1]]', '[[false,1]]', '[[1.1,1.2],[1,1]]', '[[1.1,1]]', '[[1,1],[1.1,1.2]]',
      '[[1,1.2]]', '[[1.1,1.2],["a","b"]]', '[[1.1,"b"]]', '[1,true]', '[true,"a"]', '[1,9223372036854775807.5]']) rejectsValue(v, notEqual)
    rejectsValue('[[false,true],[true]]', 'invalid json array: json size is 1, the dim 1 expected to be 2')
    rejectsValue('[[[false,true]],[[true]]]', 'invalid json array: json size is 1, the dim 2 expected to be 2')
    rejectsValue('[[false],true]', 'invalid json array: json type is not array')
    rejectsValue('[false,[true]]', 'json array, data should be number, bool, string or bytes')
    rejectsValue('[1.5,null]', 'json array, data should be number, bool, string or bytes')
    rejectsValue('[1.5,{"b64":""}]', 'json array, data should be number, bool, string or bytes')
    rejectsValue('[[true,false],[{"b64":""},{"b64":""}]]', 'json array, data should be number, bool, string or bytes')
    const oneItem = 'json array, string or bytes type only support one item'
    for (const v of ['["a","b"]', '["a",["a"]]', '[["a","b"],[1.1,1.2]]', '[["a",1.2]]', '[[{"b64":""},{"b64":""}],["a","b"]]',
      '[[{"b64":""},{"b64":""}],[true,false]]', '[{"b64":"QUJD"},{"b64":"QUJD"}]']) rejectsValue(v, oneItem)
    rejectsValue('[{"b64":"AAAAAA==","type":"int32"}]', 'json array, item is object type, object only support string or bytes type')
    rejectsValue('[{"type":"str"}]', 'get scalar data failed, type is string, but json is not string type')
    rejectsValue('[{"b64":"QUJ"}]', "'QUJ' is illegal b64 encode string")
  })
  test('typed b64 objects', () => {
    rejectsValue('{}', 'json object, value is empty')
    rejectsValue('{"b64":"","type":"str","shape":[1],"x":1}', "json object, items size is more than 3, only support specified ['b64', 'type', 'shape']")
    rejectsValue('{"b64":"","foo":1}', "json object, key is not ['b64', 'type', 'shape'], fail key:foo")
    rejectsValue('{"type":"fp16","shape":[1,1]}', "json object, 'b64' should be specified only one time")
    rejectsValue('{"b64":"","type":1}', "json object, key is 'type', value should be string type")
    rejectsValue('{"b64":"","type":"dtype_unknow","shape":[2,2]}', "json object, specified type:'dtype_unknow' is illegal")
    rejectsValue('{"b64":"","type":""}', "json object, specified type:'' is illegal")
    rejectsValue('{"b64":"","type":"INt"}', "json object, specified type:'INt' is illegal")
    rejectsValue('{"b64":"AQACAAIAAwADAAQA","type":"int16","shape":3}', "json object, key is 'shape', value should be array type")
    rejectsValue('{"b64":"AQACAAIAAwADAAQA","type":"int16","shape":[[3],[2]]}', "json object, key is 'shape', array value should be unsigned integer")
    rejectsValue('{"b64":"AQACAAIAAwADAAQA","type":"int16","shape":[3.0,2.0]}', "json object, key is 'shape', array value should be unsigned integer")
    rejectsValue('{"b64":"AQACAAIAAwADAAQA","type":"int16","shape":[3,-2]}', "json object, key is 'shape', array value should be unsigned integer")
    rejectsValue('{"b64":"","type":"int32","shape":[-0]}', "json object, key is 'shape', array value should be unsigned integer")
    rejectsValue('{"b64":"","type":"int32","shape":[1,2,0,1]}', "json object, key is 'shape', invalid shape value [1,2,0,1]")
    rejectsValue('{"b64":"","type":"int32","shape":[0,1.5]}', "json object, key is 'shape', invalid shape value [0,1.5]")
    rejectsValue('{"b64":"","type":"int32","shape":[2147483648]}', "json object, key is 'shape', number value should not be negative number, shape value: [2147483648]")
    rejectsValue('{"b64":"AQACAAIAAwADAAQA","type":"int16","shape":[3,3]}', 'size is not matched, decode base64 size:12; Given info: type:int16; type size:2; element nums:9')
    rejectsValue('{"b64":"","type":"fp16","shape":[1,1]}', 'size is not matched, decode base64 size:0; Given info: type:float16; type size:2; element nums:1')
    rejectsValue('{"b64":"AAAA","type":"fp32"}', 'size is not matched, decode base64 size:3; Given info: type:float32; type size:4; element nums:1')
    const scalar = "json object, only support scalar when data type is string or bytes, please check 'type' or 'shape'"
    rejectsValue('{"b64":"QUJD","type":"str","shape":[2]}', scalar)
    rejectsValue('{"b64":"QUJD","type":"str","shape":[0]}', scalar)
    rejectsValue('{"b64":"QUJD","shape":[0]}', scalar)
    rejectsValue('{"b64":123,"type":"fp16","shape":[1,1]}', 'get scalar data failed, type is string, but json is not string type')
    rejectsValue('{"b64":"abc"}', "'abc' is illegal b64 encode string")
    rejectsValue('{"b64":"ab!="}', 'decode base64 failed, size is not matched.')
    rejectsValue('{"b64":"Q==="}', 'decode base64 failed, size is not matched.')
    rejectsValue('{"b64":"QQ=A"}', 'decode base64 failed, size is not matched.')
    // keys are checked in sorted order: "aaa" < "b64" < "type" < "zzz"
    rejectsValue('{"b64":"","type":"bad","zzz":1}', "json object, specified type:'bad' is illegal")
    rejectsValue('{"type":"bad","aaa":1,"b64":""}', "json object, key is not ['b64', 'type', 'shape'], fail key:aaa")
  })
  test('string/bytes of shape other than [] or [1] fail after parsing, like the tensor check', () => {
    const shapeErr = (key: string, shape: string) => `Instances input ${key} check failed, detail: Instance tensor check failed: bytes or string type input  shape can only be (1,) or empty, but given shape is ${shape}`
    rejects('{"instances":[{"text1":[["abc"]],"text2":[["d"]]}]}', shapeErr('text1', '[1, 1]'))
    rejects('{"instances":{"t":{"b64":"QUJD","type":"str","shape":[1,1,1]}}}', shapeErr('t', '[1, 1, 1]'))
    rejects('{"instances":{"t":[[{"b64":"QUJD"}]]}}', shapeErr('t', '[1, 1]'))
    // a real parse error anywhere in the body wins, since the reference parses everything first
    rejects('{"instances":[{"t":[["abc"]]},{"t":null}]}', P + 'json value is null, it is not supported')
  })
})

describe('spec §6 vectors', () => {
  const add = (r: Record<string, Value>) => {
    const a = t(r['x1']!), b = t(r['x2']!)
    return new Tensor('float32', a.shape, (a.data as Float32Array).map((v, i) => v + (b.data as Float32Array)[i]!))
  }
  test('V2: add_common, two instances', () => {
    const body = '{"instances":[{"x1":[[1.1,2.2],[3.3,4.4]],"x2":[[5.5,6.6],[7.7,8.8]]},{"x1":[[1.0,2.0],[3.0,4.0]],"x2":[[5.0,6.0],[7.0,8.0]]}]}'
    assert.deepEqual(parseMsUrl('POST', '/model/add:add_common'), { name: 'add', version: 0, method: 'add_common' })
    const inst = parse(body)
    assert.deepEqual(t(inst[0]!['x1']!), new Tensor('float32', [2, 2], f32(1.1, 2.2, 3.3, 4.4)))
    assert.deepEqual(t(inst[1]!['x2']!), new Tensor('float32', [2, 2], f32(5, 6, 7, 8)))
    const text = reply(inst.map((r) => ({ outputs: { y: add(r) } })))
    assert.equal(text, '{"instances":[{"y":[[6.599999904632568,8.800000190734863],[11.0,13.200000762939453]]},{"y":[[6.0,8.0],[10.0,12.0]]}]}')
    const want = [[[6.6, 8.8], [11, 13.2]], [[6, 8], [10, 12]]]
    const got = (JSON.parse(text) as { instances: { y: number[][] }[] }).instances.map((i) => i.y)
    got.forEach((m, i) => m.flat().forEach((v, j) => assert.ok(Math.abs(v - want[i]!.flat()[j]!) < 1e-3)))
  })
  test('V3: typed b64 input', () => {
    const inst = parse('{"instances":{"x1":{"b64":"AACAPwAAAEAAAEBAAACAQA==","type":"fp32","shape":[2,2]},"x2":[[1.0,1.0],[1.0,1.0]]}}')
    assert.deepEqual(t(inst[0]!['x1']!), new Tensor('float32', [2, 2], f32(1, 2, 3, 4)))
    assert.equal(reply([{ outputs: { y: add(inst[0]!) } }]), '{"instances":[{"y":[[2.0,3.0],[4.0,5.0]]}]}')
  })
  test('V4: bytes and str in and out', () => {
    const r = parse('{"instances":{"b":{"b64":"QUJD"},"s1":"ABC","s2":{"b64":"QUJD","type":"str"}}}')[0]!
    assert.deepEqual(r['b'], new Uint8Array([65, 66, 67]))
    assert.equal(r['s1'], 'ABC')
    assert.equal(r['s2'], 'ABC')
    assert.equal(reply([{ outputs: { out: Buffer.from('ABC123'), text: 'ABC123' } }]), '{"instances":[{"out":{"b64":"QUJDMTIz"},"text":"ABC123"}]}')
  })
  test('V5: error bodies', () => {
    assert.equal(renderError('Request servable(add_error) method(add_common) , servable is not available'),
      '{"error_msg":"Request servable(add_error) method(add_common) , servable is not available"}')
    assert.throws(() => parseMsUrl('POST', '/model/add'), err('INVALID_REQUEST', 'please check url, the keyword:[service method] must contain.'))
    assert.throws(() => parseMsUrl('GET', '/model/add:add_common'), err('METHOD_NOT_ALLOWED', 'http message only support POST right now'))
    rejects('{"instances":[{"x1":[[1,2],[3,4.5]],"x2":[[1.0,2.0],[3.0,4.0]]}]}', P + 'json array, elements type is not equal')
    const ints = parse('{"instances":[{"x1":[[1,2],[3,4]],"x2":[[1,2],[3,4]]},{"x1":[[1,2],[3,4]],"x2":[[1,2],[3,4]]}]}')
    assert.equal(t(ints[0]!['x1']!).dtype, 'int32')
    const dtypeMsg = 'Given model input 0 data type kMSI_Int32 not match the data type kMSI_Float32 defined in model'
    assert.equal(reply([failed(dtypeMsg), failed(dtypeMsg)]), `{"error_msg":"${dtypeMsg}"}`)
    const y = new Tensor('float32', [2, 2], f32(6, 8, 10, 12))
    const sizeMsg = 'Given model input 1 size 12 not match the size 16 defined in model'
    assert.equal(reply([{ outputs: { y } }, failed(sizeMsg), { outputs: { y } }]),
      `{"instances":[{"y":[[6.0,8.0],[10.0,12.0]]},{"error_msg":"${sizeMsg}"},{"y":[[6.0,8.0],[10.0,12.0]]}]}`)
  })
})

describe('renderReply / renderValue (§2.3)', () => {
  test('scalars and every dtype', () => {
    const r = (v: Value) => renderValue(v)
    assert.equal(r(new Tensor('int32', [], Int32Array.of(-3))), '-3')
    assert.equal(r(new Tensor('float32', [], f32(11))), '11.0')
    assert.equal(r(new Tensor('float32', [], f32(0.1))), '0.10000000149011612')
    assert.equal(r(new Tensor('float64', [], Float64Array.of(0.1))), '0.1')
    assert.equal(r(new Tensor('float16', [], Uint16Array.of(f32ToF16Bits(1.5)))), '1.5')
    assert.equal(r(new Tensor('float16', [2], Uint16Array.of(0x7bff, 0x3555))), '[65504.0,0.333251953125]')
    assert.equal(r(new Tensor('bool', [2, 1], Uint8Array.of(1, 0))), '[[true],[false]]')
    assert.equal(r(new Tensor('int8', [3], Int8Array.of(-128, 0, 127))), '[-128,0,127]')
    assert.equal(r(new Tensor('uint8', [2], Uint8Array.of(0, 255))), '[0,255]')
    assert.equal(r(new Tensor('int16', [1], Int16Array.of(-32768))), '[-32768]')
    assert.equal(r(new Tensor('uint16', [1], Uint16Array.of(65535))), '[65535]')
    assert.equal(r(new Tensor('uint32', [1], Uint32Array.of(4294967295))), '[4294967295]')
    assert.equal(r(new Tensor('int64', [2], BigInt64Array.of(-9223372036854775808n, 9223372036854775807n))), '[-9223372036854775808,9223372036854775807]')
    assert.equal(r(new Tensor('uint64', [], BigUint64Array.of(18446744073709551615n))), '18446744073709551615')
    assert.equal(r('a"b\\c\n\u0001é'), '"a\\"b\\\\c\\n\\u0001é"')
    assert.equal(r(new Uint8Array(0)), '{"b64":""}')
    assert.equal(r(Uint8Array.of(255, 0, 1, 2)), '{"b64":"/wABAg=="}')
  })
  test('shapes: nesting, zero-size dims', () => {
    const x = new Tensor('int32', [2, 3, 1], Int32Array.of(1, 2, 3, 4, 5, 6))
    assert.equal(renderValue(x), '[[[1],[2],[3]],[[4],[5],[6]]]')
    assert.equal(renderValue(new Tensor('int32', [0], new Int32Array(0))), '[]')
    assert.equal(renderValue(new Tensor('float32', [2, 0], new Float32Array(0))), '[[],[]]')
    assert.equal(renderValue(new Tensor('float32', [0, 2], new Float32Array(0))), '[]')
    assert.equal(renderValue(new Tensor('float32', [2, 0, 3], new Float32Array(0))), '[[],[]]')
  })
  test('nlohmann float text: .0, exponents, -0.0, NaN/Infinity as null', () => {
    const cases: [number, string][] = [[0, '0.0'], [-0, '-0.0'], [1, '1.0'], [-11, '-11.0'], [0.0001, '0.0001'], [0.00001, '1e-05'],
      [1.5e-7, '1.5e-07'], [123456789012345.6, '123456789012345.6'], [999999999999999, '999999999999999.0'], [1e15, '1e+15'],
      [1234567890123456, '1.234567890123456e+15'], [1e21, '1e+21'], [1.5e300, '1.5e+300'], [5e-324, '5e-324'], [-2.5e-100, '-2.5e-100'],
      [NaN, 'null'], [Infinity, 'null'], [-Infinity, 'null'], [6.599999904632568, '6.599999904632568']]
    for (const [x, s] of cases) assert.equal(formatDouble(x), s, String(x))
    // the same text inside rows, whichever path the row takes
    assert.equal(renderValue(new Tensor('float64', [4], Float64Array.of(1, 0.5, -0, 1e-5))), '[1.0,0.5,-0.0,1e-05]')
    assert.equal(renderValue(new Tensor('float64', [4], Float64Array.of(1, 0.5, 0, 2))), '[1.0,0.5,0.0,2.0]')
    assert.equal(renderValue(new Tensor('float32', [3], f32(NaN, Infinity, 1.25))), '[null,null,1.25]')
  })
  test('keys sorted by code point, error entries, collapse rules', () => {
    const s = (x: string) => x
    assert.equal(reply([{ outputs: { b: s('1'), a: s('2'), B: s('3'), '\u{10000}': s('4'), '\uffff': s('5') } }]),
      '{"instances":[{"B":"3","a":"2","b":"1","\uffff":"5","\u{10000}":"4"}]}')
    assert.ok(compareKeys('\uffff', '\u{10000}') < 0 && compareKeys('a', 'ab') < 0 && compareKeys('b', 'a') > 0)
    assert.equal(reply([failed('e1'), failed('e2')]), '{"instances":[{"error_msg":"e1"},{"error_msg":"e2"}]}')
    assert.equal(reply([failed('only')]), '{"error_msg":"only"}')
    assert.equal(reply([]), '{"instances":[]}')
    // The renderer itself never merges: identical per-instance errors it is handed stay per instance.
    assert.equal(renderReply({ instances: [failed('same'), failed('same')] }), '{"instances":[{"error_msg":"same"},{"error_msg":"same"}]}')
    assert.equal(renderReply({ error: new ServeError('SERVABLE_NOT_FOUND', 'whole') }), '{"error_msg":"whole"}')
  })
  test('unrenderable replies', () => {
    const bad = (entries: InstanceOutcome[], detail: string) => assert.equal(reply(entries), renderError(`Failed to construct the response: ${detail}`))
    bad([{ outputs: {} }], 'reply instance items is empty')
    bad([{ outputs: { y: new Tensor('float32', [2, 2], f32(1, 2)) } }], 'reply tensor data size 2 is less than the 4 elements of shape [2,2]')
    bad([{ outputs: { y: 3 as unknown as Value } }], 'reply data type is unknown')
  })
})

describe('round trips and performance sanity', () => {
  test('float32 -> reply text -> request -> identical float32 (incl. subnormal/huge/integral)', () => {
    const xs = new Float32Array(20000)
    for (let i = 0; i < xs.length; i++) xs[i] = i % 7 === 0 ? Math.round(Math.random() * 100) : (Math.random() - 0.5) * 10 ** ((i % 76) - 38)
    xs.set([1.4e-45, -3.4028234663852886e38, 0, 1e-5, 1e15])
    const text = reply([{ outputs: { y: new Tensor('float32', [100, 200], xs) } }])
    const back = t(parse(`{"instances":${text.slice('{"instances":'.length, -1)}}`)[0]!['y']!)
    assert.deepEqual(back, new Tensor('float32', [100, 200], xs))
  })
  test('float64 text parses back to the same doubles; int32, bool and bytes round trip', () => {
    const xs = Float64Array.from({ length: 5000 }, (_, i) => (Math.random() - 0.5) * 10 ** ((i % 600) - 300))
    const parsed = parseJsonBody(renderValue(new Tensor('float64', [5000], xs))) as number[]
    assert.deepEqual(Float64Array.from(parsed), xs)
    const outputs = { i: new Tensor('int32', [2, 2], Int32Array.of(-1, 2, 2147483647, -2147483648)), b: new Tensor('bool', [3], Uint8Array.of(1, 0, 1)), raw: Uint8Array.of(0, 1, 254, 255) }
    const text = reply([{ outputs }])
    assert.deepEqual(parse(`{"instances":${text.slice('{"instances":'.length, -1)}}`)[0], { b: outputs.b, i: outputs.i, raw: outputs.raw })
  })
  test('multi-MB float body parses and renders (timing is diagnostic only)', (ctx) => {
    const rows = 500, cols = 1000
    const xs = Float32Array.from({ length: rows * cols }, () => Math.random() * 10 - 5)
    const lines: string[] = []
    for (let r = 0; r < rows; r++) lines.push(`[${Array.from(xs.subarray(r * cols, (r + 1) * cols), (v) => (Number.isInteger(v) ? v.toFixed(1) : String(v))).join(',')}]`)
    const body = `{"instances":[{"x":[${lines.join(',')}]}]}`
    let t0 = performance.now()
    JSON.parse(body)
    const native = performance.now() - t0
    t0 = performance.now()
    const x = t(parse(body)[0]!['x']!)
    const ours = performance.now() - t0
    assert.deepEqual(x, new Tensor('float32', [rows, cols], xs))
    t0 = performance.now()
    const text = reply([{ outputs: { y: x } }])
    const render = performance.now() - t0
    assert.ok(text.startsWith('{"instances":[{"y":[['))
    ctx.diagnostic(`${(body.length / 1e6).toFixed(1)} MB: JSON.parse ${native.toFixed(0)} ms, parseJsonBody+parseInstances ${ours.toFixed(0)} ms, renderReply ${render.toFixed(0)} ms`)
  })
})
