// Test guest built with componentize-js (StarlingMonkey): exports incoming-handler@0.2.10,
// imports wasi:* @0.2.10, streams with timers (poll over several pollables), and cannot take a
// second request on one instance (respondWith twice), so the host must fall back to fresh ones.
addEventListener("fetch", (event) => event.respondWith(handle(event.request)));

async function handle(req) {
  const url = new URL(req.url);
  if (url.pathname === "/stream") {
    const enc = new TextEncoder();
    let i = 0;
    const stream = new ReadableStream({
      async pull(controller) {
        if (i >= 5) {
          controller.close();
          return;
        }
        if (i > 0) await new Promise((r) => setTimeout(r, 200));
        controller.enqueue(enc.encode(`chunk ${i++}\n`));
      },
    });
    return new Response(stream, { headers: { "content-type": "text/plain" } });
  }
  const body = await req.text();
  return new Response(
    JSON.stringify({ method: req.method, path: url.pathname + url.search, body, test: req.headers.get("x-test") }),
    { headers: { "content-type": "application/json" } },
  );
}
