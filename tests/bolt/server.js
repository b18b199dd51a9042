#!/usr/bin/env node
'use strict';
// A real SOFARPC server (sofa-rpc-node, Bolt v1 + Hessian2), no registry, for Sluice's e2e tests.
//
//   node server.js --port P --name NAME
//
// Listens on 127.0.0.1:P and exposes com.example.EchoService:1.0 with
//   echo(s)      -> NAME + ':' + s
//   plus(a, b)   -> a + b
//   fail(msg)    -> throws Error(msg)  (a Bolt response with status 0x0002 SERVER_EXCEPTION)
//   sleep(ms)    -> NAME, after ms
// Prints `READY <port>` on stdout once listening, and `SLEEPING <ms>` when a sleep(ms) call
// starts (so a test can act while the call is in flight); exits 0 on SIGTERM/SIGINT.
//
// Note: sofa-rpc-node drops a response silently when the handler ran longer than the request's
// timeout field, so sleep(ms) with ms >= the client's timeout is never answered by this server.

const { RpcServer } = require('sofa-rpc-node').server;
const { parseArgs, makeLogger } = require('./common');

let opts;
try {
  opts = parseArgs(process.argv.slice(2), { port: 0, name: 'server' });
} catch (err) {
  process.stderr.write(err.message + '\nusage: node server.js --port P --name NAME\n');
  process.exit(2);
}
const logger = makeLogger('server ' + opts.name);

// RpcServer listens on every interface; the tests want loopback only.
class LoopbackRpcServer extends RpcServer {
  _startServer(port) {
    const net = require('net');
    const server = net.createServer();
    server.once('error', err => { this.emit('error', err); });
    server.on('connection', socket => { this._handleSocket(socket); });
    server.listen(port, '127.0.0.1', () => {
      const realPort = server.address().port;
      if (port === this.publishPort && port === 0) this.publishPort = realPort;
    });
    return server;
  }
}

const server = new LoopbackRpcServer({ logger, port: opts.port });
server.on('error', err => logger.warn('server error: %s', err && err.message));

server.addService({ interfaceName: 'com.example.EchoService', version: '1.0' }, {
  async echo(s) {
    return opts.name + ':' + s;
  },
  async plus(a, b) {
    return a + b;
  },
  async fail(msg) {
    const err = new Error(msg);
    err.ignoreLog = true;
    throw err;
  },
  async sleep(ms) {
    process.stdout.write('SLEEPING ' + ms + '\n');
    await new Promise(resolve => setTimeout(resolve, ms));
    return opts.name;
  },
});

function shutdown() {
  // Close the listener and connections; don't let a stuck close keep the process alive.
  setTimeout(() => process.exit(0), 500).unref();
  server.close().then(() => process.exit(0), () => process.exit(0));
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

server.start().then(() => {
  process.stdout.write('READY ' + server.publishPort + '\n');
}, err => {
  process.stderr.write('server failed to start: ' + (err && err.message) + '\n');
  process.exit(1);
});
