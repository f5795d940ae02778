/**
 * MindSpore Serving REST body codec (http_process.cc), in three parts: the JSON reader that keeps
 * the int/float distinction, the `instances` request parser and the reply renderer. Pure, no I/O.
 */
export { MS_DEFAULT_MAX_BODY_BYTES, checkMsBodySize, JSON_FLOAT_KINDS, parseJsonBody, compareKeys } from './ms-json-reader.ts'
export { parseInstances } from './ms-instances.ts'
export { renderError, renderReply, renderValue, formatDouble } from './ms-render.ts'
