// stream for workerd: the JavaScript twin of examples/stream/app.py, for bench/wasm.py.
// Sends `n` chunks of `size` bytes, `ms` milliseconds apart (query parameters). Byte k of the
// body is k % 256, cut from a block computed once at startup, so the worker copies memory and
// does no per-byte work; each chunk is handed to the stream on its own.

const SEGMENT = 1 << 20;
const BLOCK = new Uint8Array(SEGMENT + 256);
for (let i = 0; i < BLOCK.length; i++) BLOCK[i] = i % 256;

function param(query, name, fallback) {
  const value = Number.parseInt(query.get(name) ?? "", 10);
  return Number.isNaN(value) ? fallback : value;
}

export default {
  async fetch(request) {
    const query = new URL(request.url).searchParams;
    const n = param(query, "n", 5);
    const ms = param(query, "ms", 300);
    const size = param(query, "size", 16);
    const { readable, writable } = new IdentityTransformStream();
    const writer = writable.getWriter();
    (async () => {
      let offset = 0;
      try {
        for (let i = 0; i < n; i++) {
          if (i && ms) await scheduler.wait(ms);
          let left = size;
          while (left) {
            const take = Math.min(left, SEGMENT);
            const start = offset % 256;
            await writer.write(BLOCK.slice(start, start + take));
            offset += take;
            left -= take;
          }
        }
        await writer.close();
      } catch (err) {
        await writer.abort(err);
      }
    })();
    return new Response(readable, {
      headers: { "content-type": "application/octet-stream", "x-chunks": String(n) },
    });
  },
};
