// A stock js-libp2p 3.x peer (TCP, Noise, Yamux, identify, ping, kad-dht on
// /peerllm/kad/1.0.0, optional pnet), driven by tests/interop/test_js_libp2p.py.
//
//   node peer.mjs dial <multiaddr> [--swarm-key FILE] [--listen MULTIADDR]
//                     [--steps identify,ping,node-info,dht]
//   node peer.mjs listen [--swarm-key FILE] [--listen MULTIADDR]
//
// Every result is one JSON line on stdout ({"event": ...}); a failed step prints
// {"event": "error", "step": ..., "name": ..., "message": ...}. `dial` exits 0 when every
// step passed, 1 otherwise. `listen` prints {"event": "listening", ...}, then a line per
// connection, identify, checked DHT record and disconnection, and stops on SIGTERM,
// SIGINT or when its stdin closes (so it never outlives the test that started it).
// Both modes listen (127.0.0.1, an ephemeral port unless --listen says otherwise).

import "./polyfill.mjs"; // first: see there
import { readFileSync } from "node:fs";
import { createLibp2p } from "libp2p";
import { tcp } from "@libp2p/tcp";
import { noise } from "@chainsafe/libp2p-noise";
import { yamux } from "@chainsafe/libp2p-yamux";
import { identify } from "@libp2p/identify";
import { ping } from "@libp2p/ping";
import { kadDHT, passthroughMapper } from "@libp2p/kad-dht";
import { preSharedKey } from "@libp2p/pnet";
import { byteStream } from "@libp2p/utils";
import { multiaddr } from "@multiformats/multiaddr";
import * as peerllm from "./peerllm.mjs";

const STEP_TIMEOUT_MS = 10_000; // a hang guard: each step takes milliseconds on loopback
const ATTEMPT_TIMEOUT_MS = 3_000; // one DHT query; a stuck one is retried, not waited out
const ALL_STEPS = ["identify", "ping", "node-info", "dht"];

function emit(event) {
  process.stdout.write(JSON.stringify(event) + "\n");
}

function describe(err) {
  return { name: err?.name ?? typeof err, message: String(err?.message ?? err) };
}

function parseArgs(argv) {
  const [mode, ...rest] = argv;
  const options = { mode, target: null, swarmKey: null, listen: "/ip4/127.0.0.1/tcp/0", steps: ALL_STEPS };
  const flags = { "--swarm-key": "swarmKey", "--listen": "listen", "--steps": "steps" };
  for (let i = 0; i < rest.length; i++) {
    if (rest[i] in flags) options[flags[rest[i]]] = rest[++i];
    else if (options.target === null) options.target = rest[i];
    else throw new Error(`unexpected argument ${rest[i]}`);
  }
  if (typeof options.steps === "string") options.steps = options.steps.split(",");
  const unknown = options.steps.filter((step) => !ALL_STEPS.includes(step));
  if (mode === "dial" ? !options.target || unknown.length : mode !== "listen") {
    throw new Error("usage: peer.mjs dial <multiaddr> [--swarm-key FILE] [--steps a,b] | listen [--swarm-key FILE] [--listen ADDR]");
  }
  return options;
}

// Every /peerllm/ value this peer is handed (a PUT_VALUE from a node, a GET_VALUE answer)
// is checked by the spec's rules and the verdict printed, so the test sees that what a
// node publishes passes a validator written from protocols/dht-records.md.
async function validateAndReport(key, value) {
  const where = new TextDecoder().decode(key);
  try {
    await peerllm.validateRecord(key, value);
  } catch (err) {
    emit({ event: "record_checked", key: where, valid: false, ...describe(err) });
    throw err;
  }
  emit({ event: "record_checked", key: where, valid: true });
}

async function startPeer(options) {
  return createLibp2p({
    // Both modes listen, as a stock node does: a DHT server peer without a listen
    // address is one nobody can put in a routing table (py-libp2p skips it).
    addresses: { listen: [options.listen] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    // The swarm.key file as is: /key/swarm/psk/1.0.0/, /base16/, 64 hex digits.
    ...(options.swarmKey ? { connectionProtector: preSharedKey({ psk: readFileSync(options.swarmKey) }) } : {}),
    services: {
      identify: identify(),
      // The DHT pings a new contact before it enters the routing table, on a stream of
      // its own; with the default of one outbound ping stream, our `ping` step racing it
      // would keep the node out of the table for good.
      ping: ping({ maxOutboundStreams: 4 }),
      dht: kadDHT({
        protocol: peerllm.DHT_PROTOCOL,
        clientMode: false,
        validators: { peerllm: validateAndReport },
        selectors: { peerllm: peerllm.selectRecord },
        peerInfoMapper: passthroughMapper, // keep loopback addresses: the test runs on 127.0.0.1
      }),
    },
  });
}

function identified(node, peerId) {
  const { promise, resolve } = Promise.withResolvers();
  node.addEventListener("peer:identify", (event) => {
    if (peerId === null || event.detail.peerId.toString() === peerId) resolve(event.detail);
  });
  return promise;
}

function identifyEvent(result) {
  return {
    event: "identify",
    peer_id: result.peerId.toString(),
    agent: result.agentVersion ?? null,
    protocol_version: result.protocolVersion ?? null,
    protocols: [...result.protocols].sort(),
    listen_addrs: result.listenAddrs.map(String),
  };
}

async function dialSteps(node, options) {
  const target = multiaddr(options.target);
  const remote = target.getComponents().findLast((c) => c.name === "p2p")?.value ?? null;
  const seen = identified(node, remote);
  const signal = () => AbortSignal.timeout(STEP_TIMEOUT_MS);
  const steps = {
    identify: async () => identifyEvent(await Promise.race([seen,
      new Promise((_, reject) => setTimeout(() => reject(new Error("no identify within 10 s")), STEP_TIMEOUT_MS))])),
    ping: async () => ({ event: "ping", rtt_ms: await node.services.ping.ping(target, { signal: signal() }) }),
    "node-info": async () => {
      const stream = await node.dialProtocol(target, peerllm.NODE_INFO_PROTOCOL, { signal: signal() });
      try {
        const { signer, info } = await peerllm.requestNodeInfo(byteStream(stream), remote, { signal: signal() });
        return { event: "node_info", verified: true, signer, peer_id: info.peer_id, name: info.name,
          node_id: info.node_id, addrs: info.addrs, protocols: info.capabilities.protocols,
          private_network: info.capabilities.private_network };
      } finally {
        await stream.close().catch(() => {});
      }
    },
    dht: async () => {
      // The record must come from the remote peer's answer to GET_VALUE (a copy it PUT
      // here would also be in our own store). The remote publishes once its routing table
      // holds a peer, i.e. shortly after we connected: ask again until it has.
      const key = peerllm.nodeRecordKey(remote);
      const deadline = Date.now() + STEP_TIMEOUT_MS;
      let attempts = 0;
      let last = null;
      while (true) {
        attempts++;
        let answer = null;
        try {
          const attempt = AbortSignal.timeout(ATTEMPT_TIMEOUT_MS);
          for await (const event of node.services.dht.get(new TextEncoder().encode(key), { signal: attempt })) {
            if (event.name === "PEER_RESPONSE" && event.record != null && event.from.toString() === remote) answer = event.record;
          }
        } catch (err) {
          last = err; // e.g. the remote is not in our routing table yet
        }
        if (answer !== null) {
          const { record, body } = await peerllm.openRecord(key, answer.value);
          return { event: "dht_record", verified: true, key, from: remote, attempts, kind: record.k,
            seq: record.seq, peer_id: body.peer_id, name: body.name, addrs: body.addrs, models: body.models };
        }
        if (Date.now() > deadline) {
          throw new Error(`${remote} did not answer GET_VALUE ${key} with a record (${attempts} tries; last error: ${last?.message ?? "none"})`);
        }
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
    },
  };

  const started = Date.now();
  try {
    const connection = await node.dial(target, { signal: signal() });
    emit({ event: "connected", peer_id: connection.remotePeer.toString(), elapsed_ms: Date.now() - started });
  } catch (err) {
    emit({ event: "error", step: "dial", elapsed_ms: Date.now() - started, ...describe(err) });
    return false;
  }
  let passed = true;
  for (const step of options.steps) {
    try {
      emit(await steps[step]());
    } catch (err) {
      emit({ event: "error", step, ...describe(err) });
      passed = false;
    }
  }
  return passed;
}

async function listen(node) {
  // One line per connection (a redial shows as a second one) and per identify.
  node.addEventListener("connection:open", (event) => emit({ event: "connection_open",
    peer_id: event.detail.remotePeer.toString(), direction: event.detail.direction }));
  node.addEventListener("peer:identify", (event) => emit(identifyEvent(event.detail)));
  node.addEventListener("peer:disconnect", (event) => emit({ event: "disconnected", peer_id: event.detail.toString() }));
  emit({ event: "listening", peer_id: node.peerId.toString(), addrs: node.getMultiaddrs().map(String) });
  const { promise, resolve } = Promise.withResolvers();
  process.on("SIGTERM", resolve);
  process.on("SIGINT", resolve);
  process.stdin.on("end", resolve).on("close", resolve).resume();
  await promise;
}

const options = parseArgs(process.argv.slice(2));
const node = await startPeer(options);
let code = 0;
try {
  if (options.mode === "dial") code = (await dialSteps(node, options)) ? 0 : 1;
  else await listen(node);
} finally {
  await node.stop();
}
process.exit(code);
