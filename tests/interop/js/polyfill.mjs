// js-libp2p 3.x calls Promise.withResolvers (V8 12.1, node 22); node 20, what CI has, lacks
// it. Imported first by peer.mjs: ES modules evaluate in import order, so every libp2p
// module sees it. Nothing else is patched.
if (typeof Promise.withResolvers !== "function") {
  Promise.withResolvers = function withResolvers() {
    let resolve, reject;
    const promise = new Promise((res, rej) => { resolve = res; reject = rej; });
    return { promise, resolve, reject };
  };
}
