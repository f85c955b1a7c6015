// hello for workerd: the JavaScript twin of examples/hello/app.py, for bench/wasm.py.
// Echoes method, path, authority, scheme, headers and body as JSON; bodies over 64 KiB are
// summarised by length and sha256, as the Python guest does. It logs the same two lines.

const LIMIT = 65536;

function hex(buffer) {
  return [...new Uint8Array(buffer)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    const body = new Uint8Array(await request.arrayBuffer());
    const digest = await crypto.subtle.digest("SHA-256", body);
    const echo = {
      method: request.method,
      path: url.pathname + url.search,
      authority: url.host,
      scheme: url.protocol.replace(":", "").toUpperCase(),
      headers: [...request.headers],
      body: body.length <= LIMIT ? new TextDecoder("latin1").decode(body) : null,
      body_len: body.length,
      body_sha256: hex(digest),
      env: {},
    };
    console.log(`hello handled ${echo.method} ${echo.path}`);
    console.error("a line on stderr");
    return new Response(JSON.stringify(echo), { headers: { "content-type": "application/json" } });
  },
};
