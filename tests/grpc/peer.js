// grpc-js as a gRPC server or client for tests/e2e_grpc.rs (service: echo.proto).
//
//   node peer.js server [HOST:]PORT NAME [HEALTH_FILE [SERVICES]]
//                                      serves Echo on HOST:PORT (h2c; HOST defaults to
//                                      127.0.0.1); answers carry NAME. With HEALTH_FILE, also
//                                      grpc.health.v1.Health/Check (health.proto): each call
//                                      answers the status named in the file (SERVING,
//                                      NOT_SERVING...) for the services in SERVICES (a comma
//                                      list; default ",sluice.test.Echo": the server's overall
//                                      health and Echo's) and NOT_FOUND for any other, as the
//                                      standard health service does; each call is logged.
//   node peer.js client TARGET CASE    runs CASE against TARGET (host:port, h2c) and prints one
//                                      JSON line: { ok, code, details, ... }
//
// Client cases: unary:N (N calls, 20 at a time; counts answers per server), stream, bidi,
// error (the server fails with NOT_FOUND), die (a server stream whose server exits mid-way),
// retry:N (N calls that server `a` fails UNAVAILABLE), slow:MS (an answer after MS ms),
// pingpong:N (a bidi call that sends one message, waits for its echo, then sends the next, N
// rounds, with a 10 s deadline; reports the echoes in order and the call's time in ms).
const path = require('path');
const grpc = require('@grpc/grpc-js');
const loader = require('@grpc/proto-loader');

const def = loader.loadSync(path.join(__dirname, 'echo.proto'), { keepCase: true });
const { Echo } = grpc.loadPackageDefinition(def).sluice.test;
const [mode, where, arg, healthFile, services] = process.argv.slice(2);

function later(ms, f) {
  if (ms > 0) setTimeout(f, ms);
  else f();
}

if (mode === 'server') {
  const name = arg;
  const server = new grpc.Server();
  server.addService(Echo.service, {
    Unary(call, cb) {
      const m = call.request;
      later(m.delay_ms, () => {
        // `fail-on-NAME` fails only on server NAME; any other text fails everywhere.
        const fails = m.fail_code && (!m.text.startsWith('fail-on-') || m.text === 'fail-on-' + name);
        if (fails) cb({ code: m.fail_code, details: 'told to fail: ' + m.text });
        else cb(null, { text: name + ':' + m.text });
      });
    },
    ServerStream(call) {
      const m = call.request;
      let i = 0;
      const next = () => {
        // Exits once the two messages went out (an exit at once could lose them).
        if (m.die && i === 2) return setTimeout(() => process.exit(1), 200);
        if (i === m.count) return call.end();
        call.write({ text: name + ':' + m.text + ':' + i });
        i += 1;
        later(m.delay_ms, next);
      };
      next();
    },
    Bidi(call) {
      call.on('data', (m) => call.write({ text: name + ':' + m.text }));
      call.on('end', () => call.end());
    },
  });
  if (healthFile) {
    const fs = require('fs');
    const hdef = loader.loadSync(path.join(__dirname, 'health.proto'), { keepCase: true });
    const { Health } = grpc.loadPackageDefinition(hdef).grpc.health.v1;
    const known = (services === undefined ? ',sluice.test.Echo' : services).split(',');
    server.addService(Health.service, {
      Check(call, cb) {
        const service = call.request.service || '';
        const status = fs.readFileSync(healthFile, 'utf8').trim();
        console.log(JSON.stringify({ check: service, status, authority: call.getHost ? call.getHost() : null }));
        if (!known.includes(service)) cb({ code: grpc.status.NOT_FOUND, details: 'unknown service' });
        else cb(null, { status });
      },
    });
  }
  server.bindAsync(where.includes(':') ? where : '127.0.0.1:' + where, grpc.ServerCredentials.createInsecure(), (err) => {
    if (err) throw err;
  });
} else {
  const client = new Echo(where, grpc.credentials.createInsecure());
  let printed = false;
  const done = (out) => {
    if (printed) return;
    printed = true;
    console.log(JSON.stringify(out));
    client.close();
  };
  const failed = (e) => ({ ok: false, code: e.code, details: e.details });
  const [kind, n] = (arg || '').split(':');
  if (kind === 'unary') {
    const total = Number(n);
    const by = {};
    let started = 0;
    let finished = 0;
    let errors = [];
    const one = () => {
      if (started === total) return;
      started += 1;
      client.Unary({ text: 'u' + started, delay_ms: 20 }, (e, r) => {
        if (e) errors.push(e.code + ' ' + e.details);
        else {
          const who = r.text.split(':')[0];
          by[who] = (by[who] || 0) + 1;
        }
        finished += 1;
        if (finished === total) done({ ok: errors.length === 0, by, errors: errors.slice(0, 5) });
        else one();
      });
    };
    for (let i = 0; i < 20; i++) one();
  } else if (kind === 'stream') {
    const got = [];
    const call = client.ServerStream({ text: 's', count: 5, delay_ms: 20 });
    call.on('data', (m) => got.push(m.text.split(':').slice(1).join(':')));
    call.on('error', (e) => done({ ...failed(e), got }));
    call.on('end', () => done({ ok: true, got }));
  } else if (kind === 'bidi') {
    const got = [];
    // Sends its three messages, then reads the three echoes.
    const call = client.Bidi();
    call.on('data', (m) => got.push(m.text.split(':')[1]));
    call.on('error', (e) => done({ ...failed(e), got }));
    call.on('end', () => done({ ok: true, got }));
    for (const t of ['b0', 'b1', 'b2']) call.write({ text: t });
    call.end();
  } else if (kind === 'pingpong') {
    const rounds = Number(n);
    const got = [];
    const t0 = Date.now();
    const call = client.Bidi({ deadline: Date.now() + 10000 });
    call.on('data', (m) => {
      got.push(m.text);
      if (got.length === rounds) call.end();
      else call.write({ text: 'p' + got.length });
    });
    call.on('error', (e) => done({ ...failed(e), got, ms: Date.now() - t0 }));
    call.on('end', () => done({ ok: true, got, ms: Date.now() - t0 }));
    call.write({ text: 'p0' });
  } else if (kind === 'error') {
    client.Unary({ text: 'e', fail_code: grpc.status.NOT_FOUND }, (e, r) =>
      done(e ? failed(e) : { ok: true, text: r.text }));
  } else if (kind === 'retry') {
    // N calls in turn that server `a` fails UNAVAILABLE (trailers-only): how many succeeded.
    const total = Number(n);
    let ok = 0;
    let i = 0;
    const codes = [];
    const next = () => {
      if (i === total) return done({ ok: ok === total, succeeded: ok, codes });
      i += 1;
      client.Unary({ text: 'fail-on-a', fail_code: grpc.status.UNAVAILABLE }, (e) => {
        if (e) codes.push(e.code);
        else ok += 1;
        next();
      });
    };
    next();
  } else if (kind === 'die') {
    const got = [];
    const call = client.ServerStream({ text: 'd', count: 10, delay_ms: 50, die: true });
    call.on('data', (m) => got.push(m.text));
    call.on('error', (e) => done({ ...failed(e), got: got.length }));
    call.on('end', () => done({ ok: true, got: got.length }));
  } else if (kind === 'slow') {
    // A unary call the server answers after N ms, with no deadline of the client's own.
    client.Unary({ text: 'slow', delay_ms: Number(n) }, (e, r) =>
      done(e ? failed(e) : { ok: true, text: r.text }));
  } else {
    throw new Error('unknown case ' + arg);
  }
}
