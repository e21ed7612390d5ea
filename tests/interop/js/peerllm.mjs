// PeerLLM's wire formats, written from protocols/*.md alone (never from the Python code),
// so that reading a node's answers here proves the specs are enough for another libp2p
// implementation: framing.md (frames), node-info.md (signed NodeInfo), dht-records.md
// (signed DHT values, their keys, newest-wins).

import { createHash } from "node:crypto";
import { decode, encode } from "@msgpack/msgpack";
import { publicKeyFromRaw } from "@libp2p/crypto/keys";
import { peerIdFromPublicKey } from "@libp2p/peer-id";

export const NODE_INFO_PROTOCOL = "/peerllm/node-info/1.0.0";
export const DHT_PROTOCOL = "/peerllm/kad/1.0.0";

const NODE_INFO_CAP = 65536; // node-info.md: 64 KiB per frame body
const INFO_DOMAIN = "peerllm/node-info/v1\0";
const RECORD_DOMAIN = "peerllm/dht-record/v1\0";
const RECORD_CAP = 8192;
const MAX_LIFE_S = 24 * 3600;

const utf8 = new TextEncoder();

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) { out.set(part, at); at += part.length; }
  return out;
}

function sha256hex(text) {
  return createHash("sha256").update(text, "utf8").digest("hex");
}

function fail(what) {
  throw new Error(`PeerLLM peer broke the spec: ${what}`);
}

function bytesField(map, key, length) {
  const value = map[key];
  if (!(value instanceof Uint8Array)) fail(`${key}: expected bin, got ${typeof value}`);
  if (length !== undefined && value.length !== length) fail(`${key}: expected ${length} bytes, got ${value.length}`);
  return value;
}

async function verifyEd25519(pk, payload, sig) {
  const key = publicKeyFromRaw(pk);
  if (!(await key.verify(payload, sig))) fail("Ed25519 signature does not verify");
  return peerIdFromPublicKey(key).toString();
}

// -- framing.md --------------------------------------------------------------------------

export function encodeFrame(message) {
  const body = encode(message);
  const prefix = new Uint8Array(4);
  new DataView(prefix.buffer).setUint32(0, body.length);
  return concat(prefix, body);
}

/** One frame from a @libp2p/utils byteStream: the 4-byte big-endian length, then the body. */
export async function readFrame(bytes, cap, options) {
  const prefix = (await bytes.read({ ...options, bytes: 4 })).subarray();
  const length = new DataView(prefix.buffer, prefix.byteOffset, 4).getUint32(0);
  if (length === 0 || length > cap) fail(`frame length ${length} outside 1..${cap}`);
  const body = decode((await bytes.read({ ...options, bytes: length })).subarray());
  if (body === null || typeof body !== "object" || Array.isArray(body)) fail("frame body is not a map");
  return body;
}

// -- node-info.md ------------------------------------------------------------------------

/** Ask for a NodeInfo on an open /peerllm/node-info/1.0.0 stream; verify and decode it. */
export async function requestNodeInfo(bytes, remotePeer, options) {
  const id = 1;
  await bytes.write(encodeFrame({ t: "info_req", v: 1, id }), options);
  const answer = await readFrame(bytes, NODE_INFO_CAP, options);
  if (answer.v !== 1) fail(`node-info answer v=${answer.v}`);
  if (answer.t === "error") fail(`node-info error ${answer.code}: ${answer.msg}`);
  if (answer.t !== "info" || answer.id !== id) fail(`unexpected node-info answer t=${answer.t} id=${answer.id}`);
  const body = bytesField(answer, "body");
  const pk = bytesField(answer, "pk", 32);
  const sig = bytesField(answer, "sig", 64);
  const signer = await verifyEd25519(pk, concat(utf8.encode(INFO_DOMAIN), body), sig);
  if (signer !== remotePeer) fail(`node-info signed by ${signer}, not by the connected peer ${remotePeer}`);
  const info = decode(body);
  if (info.peer_id !== remotePeer) fail(`node-info peer_id ${info.peer_id} is not the signer`);
  return { signer, info };
}

// -- dht-records.md ----------------------------------------------------------------------

export function nodeRecordKey(peerId) {
  return `/peerllm/n/${sha256hex(peerId).slice(0, 32)}`;
}

export function nameRecordKey(name) {
  return `/peerllm/name/${sha256hex(name).slice(0, 32)}`;
}

function float64(value) {
  const out = new Uint8Array(9);
  out[0] = 0xcb; // always float64, even for an integral exp (the spec's canonical payload)
  new DataView(out.buffer).setFloat64(1, value);
  return out;
}

function recordPayload(k, seq, exp, pk, body) {
  // msgpack([k, seq, float64(exp), pk, body]) as a fixarray of 5, built by hand so exp
  // stays float64 and the ints take their shortest encoding.
  return concat(utf8.encode(RECORD_DOMAIN), Uint8Array.of(0x95), encode(k), encode(seq),
    float64(exp), encode(pk), encode(body));
}

/** Verify a DHT value per dht-records.md "Validation"; its decoded outer map and body. */
export async function openRecord(key, value, nowS = Date.now() / 1000) {
  if (value.length > RECORD_CAP) fail(`record of ${value.length} bytes over ${RECORD_CAP}`);
  const record = decode(value);
  if (record === null || typeof record !== "object" || Array.isArray(record)) fail("record is not a map");
  const { k, v, seq, exp } = record;
  if (v !== 1) fail(`record v=${v}`);
  if (k !== "node" && k !== "name") fail(`record kind ${k}`);
  if (!Number.isInteger(seq) || seq < 0) fail(`record seq ${seq}`);
  if (typeof exp !== "number" || !(nowS < exp && exp <= nowS + MAX_LIFE_S)) fail(`record exp ${exp} not within (now, now + 24 h]`);
  const pk = bytesField(record, "pk", 32);
  const bodyBytes = bytesField(record, "body");
  const sig = bytesField(record, "sig", 64);
  const signer = await verifyEd25519(pk, recordPayload(k, seq, exp, pk, bodyBytes), sig);
  const body = decode(bodyBytes);
  if (body.peer_id !== signer) fail(`record about ${body.peer_id} signed by ${signer}`);
  const expected = k === "node" ? nodeRecordKey(body.peer_id) : nameRecordKey(body.name);
  if (key !== expected) fail(`record under ${key}, expected ${expected}`);
  return { record, body };
}

/** The libp2p DHT validator for the "peerllm" namespace (throws to refuse a value). */
export async function validateRecord(key, value) {
  await openRecord(new TextDecoder().decode(key), value);
}

/** The libp2p DHT selector: highest seq, then the later exp, then the first. */
export function selectRecord(key, values) {
  let best = 0;
  let bestOrder = null;
  values.forEach((value, index) => {
    let seq, exp;
    try { ({ seq, exp } = decode(value)); } catch { return; } // invalid values are skipped
    if (bestOrder === null || seq > bestOrder[0] || (seq === bestOrder[0] && exp > bestOrder[1])) {
      best = index;
      bestOrder = [seq, exp];
    }
  });
  return best;
}
