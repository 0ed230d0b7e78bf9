// Development only: serves web/dist and forwards /graphql (HTTP and websocket),
// /v1/ and /health to a running surge server, so the dashboard can be tried (and
// the browser tests run, with SURGE_WEB_URL) same-origin before the server
// mounts web.Handler().
//
//   node e2e/devproxy.mjs [listen=127.0.0.1:8101] [target=http://127.0.0.1:8100]
import { createReadStream, existsSync, statSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { dirname, extname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';

const dist = join(dirname(fileURLToPath(import.meta.url)), '..', 'dist');
const [listen = '127.0.0.1:8101', target = process.env.SURGE_URL || 'http://127.0.0.1:8100'] = process.argv.slice(2);
const up = new URL(target);
const types = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8', '.txt': 'text/plain; charset=utf-8' };
const proxied = (p) => p === '/graphql' || p.startsWith('/v1/') || p === '/health' || p === '/ready';

const server = http.createServer((req, res) => {
  const path = new URL(req.url, 'http://x').pathname;
  if (proxied(path)) {
    const fwd = http.request({ host: up.hostname, port: up.port, method: req.method, path: req.url, headers: { ...req.headers, host: up.host, ...(req.headers.origin ? { origin: up.origin } : {}) } }, (r) => {
      res.writeHead(r.statusCode, r.headers);
      r.pipe(res);
    });
    fwd.on('error', (e) => (res.headersSent ? res.destroy() : (res.writeHead(502), res.end(String(e)))));
    req.pipe(fwd);
    return;
  }
  const file = path === '/' ? 'index.html' : path === '/playground' ? 'playground.html' : path.startsWith('/assets/') ? normalize(path.slice(1)) : null;
  const full = file && !file.startsWith('..') ? join(dist, file) : null;
  if (!full || !existsSync(full) || !statSync(full).isFile()) {
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end('404 page not found\n');
    return;
  }
  res.writeHead(200, { 'content-type': types[extname(full)] ?? 'application/octet-stream', 'cache-control': 'no-cache' });
  createReadStream(full).pipe(res);
});

// Websocket upgrade: replay the request head to the server and splice the sockets.
server.on('upgrade', (req, socket, head) => {
  const conn = net.connect(Number(up.port), up.hostname, () => {
    const lines = [`${req.method} ${req.url} HTTP/1.1`];
    for (let i = 0; i < req.rawHeaders.length; i += 2) {
      const [k, v] = [req.rawHeaders[i], req.rawHeaders[i + 1]];
      const lk = k.toLowerCase();
      lines.push(`${k}: ${lk === 'host' ? up.host : lk === 'origin' ? up.origin : v}`);
    }
    conn.write(lines.join('\r\n') + '\r\n\r\n');
    if (head?.length) conn.write(head);
    conn.pipe(socket);
    socket.pipe(conn);
  });
  const close = () => (conn.destroy(), socket.destroy());
  conn.on('error', close);
  socket.on('error', close);
});

const [host, port] = listen.split(':');
server.listen(Number(port), host, () => console.log(`devproxy: http://${listen} → dist/ + ${target} (/graphql, /v1/)`));
