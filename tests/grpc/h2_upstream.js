// An HTTP/2 cleartext (h2c, prior knowledge) upstream for the end-to-end tests of HTTP/2
// upstreams (tests/e2e_grpc.rs), on node's own `http2` module.
//
//   node h2_upstream.js [HOST:]PORT NAME LOG [both]
//
// It listens on HOST (default 127.0.0.1); with `both` it serves HTTP/1.1 on the same port too
// (a connection that does not start with the HTTP/2 preface), for the tests of clusters that
// speak each client's version (`protocol: downstream`).
//
// Every request is answered 200 with a JSON description of what arrived (HTTP version, method,
// path, authority, headers, body length, trailers, and which upstream answered), and each
// processed request is appended to LOG as one JSON line (with its HTTP version). Paths:
//   /answer-early   answers `early` at once, whole, without reading the request body (logs
//                   { early_closed: RST_STREAM code } when the stream closes);
//   /echo-sizes     answers at once and echoes the size of each request DATA frame as it
//                   arrives (`N;`), then `end` after the request's end (full duplex);
//   /slow/MS/...    answers after MS milliseconds (a stream reset before is logged as
//                   { cancelled: PATH, code: RST_STREAM code });
//   /trailers...    answers with a body and an `x-checksum` trailer (no content-length);
//   /refuse-once/T  refuses the first stream for tag T with RST_STREAM(REFUSED_STREAM);
//   /refuse-early/T refuses the first stream for tag T at once, before its body's end (the
//                   request's HEADERS are enough), with RST_STREAM(REFUSED_STREAM);
//   /503-early/T    answers the first stream for tag T 503 at once, whole, before its body's
//                   end (logs { early_503: PATH }); later ones as usual;
//   /goaway/T       holds streams until 4 arrived on one connection (the first time only), then
//                   sends GOAWAY with the second one's id as last_stream_id, answers the first
//                   two and never processes the others (a graceful shutdown, RFC 9113 §6.8);
//   /drop-connection/T  the first time for tag T, closes the connection's socket without a
//                   GOAWAY and without answering (an upstream that closed an idle connection
//                   just as the request went out on it).
const http2 = require('http2');
const fs = require('fs');
const crypto = require('crypto');

const [where, name, log, mode] = process.argv.slice(2);
const colon = where.lastIndexOf(':');
const host = colon < 0 ? '127.0.0.1' : where.slice(0, colon);
const port = colon < 0 ? where : where.slice(colon + 1);
const refused = new Set();
const dropped = new Set();
let goawayDone = false;

function record(entry) {
  fs.appendFileSync(log, JSON.stringify(entry) + '\n');
}

function answer(stream, headers, body, trailers) {
  const path = headers[':path'];
  stream.answered = true;
  const seen = {
    upstream: name,
    version: '2.0',
    method: headers[':method'],
    path,
    authority: headers[':authority'] || null,
    scheme: headers[':scheme'] || null,
    headers: Object.fromEntries(Object.entries(headers).filter(([k]) => !k.startsWith(':'))),
    body_len: body.length,
    trailers,
  };
  record({ upstream: name, version: '2.0', method: seen.method, path, stream: stream.id });
  const text = JSON.stringify(seen);
  if (path.startsWith('/trailers')) {
    const payload = Buffer.from(text.repeat(50));
    const sum = crypto.createHash('sha256').update(payload).digest('hex');
    stream.respond({ ':status': 200, 'content-type': 'application/json' }, { waitForTrailers: true });
    stream.on('wantTrailers', () => stream.sendTrailers({ 'x-checksum': sum }));
    stream.end(payload);
    return;
  }
  stream.respond({
    ':status': 200,
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    'x-upstream': name,
  });
  stream.end(text);
}

const server = http2.createServer();
const sockets = new Map();
server.on('connection', (socket) => {
  const port = socket.remotePort;
  sockets.set(port, socket);
  socket.on('close', () => sockets.delete(port));
});
server.on('session', (session) => {
  session.held = [];
});
server.on('stream', (stream, headers) => {
  const session = stream.session;
  if (headers[':path'].startsWith('/refuse-early/') && !refused.has(headers[':path'])) {
    refused.add(headers[':path']);
    record({ upstream: name, refused: headers[':path'], stream: stream.id });
    stream.refusedHere = true;
    stream.on('error', () => {});
    stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
    return;
  }
  if (headers[':path'].startsWith('/503-early/') && !refused.has(headers[':path'])) {
    refused.add(headers[':path']);
    record({ upstream: name, early_503: headers[':path'], stream: stream.id });
    stream.answered = true;
    stream.on('error', () => {});
    stream.respond({ ':status': 503, 'x-upstream': name });
    stream.end('busy');
    return;
  }
  if (headers[':path'] === '/answer-early') {
    // Answers whole at once, without reading the request body (the proxy must stop sending it).
    stream.answered = true;
    stream.on('error', () => {});
    stream.on('close', () => record({ upstream: name, early_closed: stream.rstCode }));
    stream.respond({ ':status': 200, 'x-upstream': name });
    stream.end('early');
    return;
  }
  if (headers[':path'] === '/echo-sizes') {
    // Full duplex: answers at once, and as each DATA frame of the request arrives writes its
    // size (`N;`); ends after the request's end.
    stream.answered = true;
    stream.respond({ ':status': 200, 'x-upstream': name });
    stream.on('data', (d) => stream.write(d.length + ';'));
    stream.on('end', () => stream.end('end'));
    stream.on('error', () => {});
    return;
  }
  const chunks = [];
  let trailers = null;
  stream.on('trailers', (t) => {
    trailers = Object.fromEntries(Object.entries(t).filter(([k]) => !k.startsWith(':')));
  });
  stream.on('data', (d) => chunks.push(d));
  stream.on('error', () => {});
  // A stream closed before its answer (the proxy cancelled it) is logged with its reset code.
  stream.on('close', () => {
    // (A stream this server refused itself is not a cancellation: it was logged as refused.)
    if (!stream.answered && !stream.refusedHere && !session.destroyed) {
      record({ upstream: name, cancelled: headers[':path'], code: stream.rstCode });
    }
  });
  stream.on('end', () => {
    const body = Buffer.concat(chunks);
    const path = headers[':path'];
    if (path.startsWith('/refuse-once/') && !refused.has(path)) {
      refused.add(path);
      record({ upstream: name, refused: path, stream: stream.id });
      stream.refusedHere = true;
      stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
      return;
    }
    if (path.startsWith('/drop-connection/') && !dropped.has(path)) {
      dropped.add(path);
      record({ upstream: name, dropped: path, method: headers[':method'], stream: stream.id });
      stream.refusedHere = true;
      // (node forbids destroying `session.socket`: the raw socket is kept from 'connection'.)
      sockets.get(session.socket.remotePort).destroy();
      return;
    }
    if (path.startsWith('/goaway/') && !goawayDone) {
      session.held.push({ stream, headers, body, trailers });
      if (session.held.length === 4) {
        goawayDone = true;
        const held = session.held.sort((a, b) => a.stream.id - b.stream.id);
        const last = held[1].stream.id;
        record({ upstream: name, goaway_last_stream_id: last });
        session.goaway(http2.constants.NGHTTP2_NO_ERROR, last);
        for (const h of held) {
          if (h.stream.id <= last) answer(h.stream, h.headers, h.body, h.trailers);
        }
      }
      return;
    }
    const bytes = path.match(/^\/bytes\/(\d+)/);
    if (bytes) {
      // A large body of N bytes ("b"): for keepalive tests behind a slow path.
      stream.respond({ ':status': 200, 'content-length': bytes[1] });
      stream.end(Buffer.alloc(Number(bytes[1]), 'b'));
      return;
    }
    const slow = path.match(/^\/slow\/(\d+)/);
    if (slow) {
      setTimeout(() => answer(stream, headers, body, trailers), Number(slow[1]));
      return;
    }
    answer(stream, headers, body, trailers);
  });
});
if (mode === 'both') {
  // HTTP/1.1 on the same port: each connection goes to the server its first bytes name.
  const h1 = require('http').createServer((req, res) => {
    let n = 0;
    req.on('data', (d) => { n += d.length; });
    req.on('end', () => {
      record({ upstream: name, version: req.httpVersion, method: req.method, path: req.url });
      const text = JSON.stringify({
        upstream: name,
        version: req.httpVersion,
        method: req.method,
        path: req.url,
        headers: req.headers,
        body_len: n,
      });
      res.writeHead(200, {
        'content-type': 'application/json',
        'content-length': Buffer.byteLength(text),
        'x-upstream': name,
      });
      res.end(text);
    });
  });
  // (node's http2 server cannot take a socket whose first bytes were read already: each
  // connection is relayed to the server its first bytes name, both listening on loopback.)
  const net = require('net');
  server.listen(0, '127.0.0.1');
  h1.listen(0, '127.0.0.1');
  net.createServer((socket) => {
    socket.once('data', (first) => {
      const h2 = first.toString('latin1').startsWith('PRI * HTTP/2.0');
      const inner = net.connect((h2 ? server : h1).address().port, '127.0.0.1');
      inner.write(first);
      socket.pipe(inner).pipe(socket);
      const end = () => { socket.destroy(); inner.destroy(); };
      socket.on('error', end);
      inner.on('error', end);
      socket.on('close', end);
      inner.on('close', end);
    });
  }).listen(Number(port), host);
} else {
  server.listen(Number(port), host);
}
