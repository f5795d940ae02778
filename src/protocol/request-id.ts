/**
 * Request ids: a client's `x-request-id` (REST header or gRPC metadata) is kept when it is short and
 * plain, else the listener makes one; it is echoed back, written in the access line and carried to
 * the replica's engine log.
 */
import { randomUUID } from 'node:crypto'
import type { Metadata } from '@grpc/grpc-js'

/** An incoming request id is kept when it is short and plain; anything else gets a fresh one. */
const REQUEST_ID = /^[\w.:@/+=-]{1,128}$/

/** The request id a client sent (header or metadata value), if it is one we keep. */
export function acceptedRequestId(v: unknown): string | undefined {
  return typeof v === 'string' && REQUEST_ID.test(v) ? v : undefined
}

export function newRequestId(): string {
  return randomUUID()
}

/** The request id of a call, as the interceptor left it in the call's metadata. */
export function callRequestId(md: Metadata): string | undefined {
  const v = md.get('x-request-id')[0]
  return typeof v === 'string' ? v : undefined
}

/** What a gRPC handler tells the call's access line (servable, method, instances or tokens). */
export type GrpcAccessFields = Record<string, string | number | undefined>

/** Keyed by the call's metadata: the one object the interceptor and the handler both hold. */
const grpcAccess = new WeakMap<Metadata, GrpcAccessFields>()

/** A handler adds to its call's access line (see ops.ts); returns the record, which it may fill in later. */
export function noteGrpcAccess<T extends GrpcAccessFields>(md: Metadata, fields: T): T {
  const a = grpcAccess.get(md)
  if (a) return Object.assign(a, fields)
  grpcAccess.set(md, fields)
  return fields
}

export function grpcAccessOf(md: Metadata | undefined): GrpcAccessFields | undefined {
  return md ? grpcAccess.get(md) : undefined
}
