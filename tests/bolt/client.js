#!/usr/bin/env node
'use strict';
// A real SOFARPC client (sofa-rpc-node, Bolt v1 + Hessian2) with a fixed server address (no
// registry), for Sluice's e2e tests.
//
//   node client.js --target HOST:PORT --mode echo|plus|fail|sleep
//                  [--count N] [--concurrency C] [--timeout MS] [--ms MS] [--msg S] [--linger MS]
//
//   echo   N invokes of echo("msg-<i>-<pid>"), C at a time; checks each answer is "<server>:<sent>".
//          {"mode":"echo","ok":n,"errors":[...],"servers":{"a":x,"b":y},"mismatches":m,"elapsed_ms":t}
//   plus   N invokes of plus(i, i+1), C at a time; checks each answer is 2i+1.
//          {"mode":"plus","ok":n,"errors":[...],"mismatches":m,"elapsed_ms":t}
//   fail   one invoke of fail("boom").
//          {"mode":"fail","threw":true,"error":{"name":..,"message":..,"resultCode":..},"elapsed_ms":t}
//   sleep  one invoke of sleep(--ms, default 1000) with --timeout as the request timeout.
//          {"mode":"sleep","ok":bool,"result":..,"error":{...}|null,"elapsed_ms":t}
//
// --msg S makes echo send exactly S when --count is 1 (else S-<i>); --linger MS keeps the
// connection open (idle) for MS after the run before exiting, e.g. to observe heartbeats.
//
// --timeout (default 3000) is the per-request responseTimeout, which the client also writes into
// the Bolt request's timeout field. `errors` holds at most 20 distinct samples; `error_count` the
// total. Prints exactly one JSON line on stdout. Exit code 0 whenever the run did what it was asked
// (even if it reports RPC errors), 2 on bad arguments, 1 on a harness failure.

const { RpcClient } = require('sofa-rpc-node').client;
const { parseArgs, makeLogger } = require('./common');

const SERVICE = 'com.example.EchoService';

let opts;
try {
  opts = parseArgs(process.argv.slice(2), {
    target: '', mode: '', count: 100, concurrency: 10, timeout: 3000, ms: 1000, msg: '', linger: 0,
  });
  if (!opts.target) throw new Error('--target HOST:PORT is required');
  if (![ 'echo', 'plus', 'fail', 'sleep' ].includes(opts.mode)) throw new Error('--mode must be echo, plus, fail or sleep');
  if (opts.count < 0 || opts.concurrency < 1 || opts.timeout < 1) throw new Error('bad --count/--concurrency/--timeout');
} catch (err) {
  process.stderr.write(err.message + '\nusage: node client.js --target HOST:PORT --mode echo|plus|fail|sleep [--count N] [--concurrency C] [--timeout MS] [--ms MS] [--msg S] [--linger MS]\n');
  process.exit(2);
}

const logger = makeLogger('client');
const client = new RpcClient({ logger, responseTimeout: opts.timeout });
client.on('error', err => logger.warn('client error: %s', err && err.message));
const consumer = client.createConsumer({
  interfaceName: SERVICE,
  version: '1.0',
  serverHost: opts.target, // direct mode: no registry
  responseTimeout: opts.timeout,
});

const str = s => ({ $class: 'java.lang.String', $: s });
const int = n => ({ $class: 'int', $: n });

function errInfo(err) {
  if (!err) return null;
  return { name: err.name || 'Error', message: String(err.message || err), resultCode: err.resultCode || null };
}

function invoke(method, args, timeout) {
  return consumer.invoke(method, args, { responseTimeout: timeout || opts.timeout });
}

// Runs task(i) for i in [0, n), at most c at a time.
async function pool(n, c, task) {
  let next = 0;
  const worker = async () => {
    while (next < n) {
      const i = next++;
      await task(i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(c, n) }, worker));
}

async function batch(check) {
  const report = { ok: 0, errors: [], error_count: 0, mismatches: 0, mismatch_samples: [] };
  const seen = new Set();
  await pool(opts.count, opts.concurrency, async i => {
    try {
      const verdict = await check(i);
      if (verdict === true) report.ok++;
      else {
        report.mismatches++;
        if (report.mismatch_samples.length < 5) report.mismatch_samples.push(verdict);
      }
    } catch (err) {
      report.error_count++;
      const key = (err.name || 'Error') + ': ' + err.message;
      if (!seen.has(key) && report.errors.length < 20) {
        seen.add(key);
        report.errors.push(key);
      }
    }
  });
  if (!report.mismatch_samples.length) delete report.mismatch_samples;
  return report;
}

async function run() {
  const start = Date.now();
  let out;
  switch (opts.mode) {
    case 'echo': {
      const servers = {};
      out = await batch(async i => {
        const sent = opts.msg ? (opts.count === 1 ? opts.msg : `${opts.msg}-${i}`) : `msg-${i}-${process.pid}`;
        const got = await invoke('echo', [ str(sent) ]);
        const m = typeof got === 'string' ? got.match(/^([^:]*):(.*)$/s) : null;
        if (!m || m[2] !== sent) return { sent, got };
        servers[m[1]] = (servers[m[1]] || 0) + 1;
        return true;
      });
      out = Object.assign({ mode: 'echo' }, out, { servers });
      break;
    }
    case 'plus': {
      out = await batch(async i => {
        const got = await invoke('plus', [ int(i), int(i + 1) ]);
        return got === 2 * i + 1 ? true : { a: i, b: i + 1, got };
      });
      out = Object.assign({ mode: 'plus' }, out);
      break;
    }
    case 'fail': {
      try {
        const got = await invoke('fail', [ str('boom') ]);
        out = { mode: 'fail', threw: false, result: got, error: null };
      } catch (err) {
        out = { mode: 'fail', threw: true, result: null, error: errInfo(err) };
      }
      break;
    }
    case 'sleep': {
      try {
        const got = await invoke('sleep', [ int(opts.ms) ]);
        out = { mode: 'sleep', ok: true, result: got, error: null };
      } catch (err) {
        out = { mode: 'sleep', ok: false, result: null, error: errInfo(err) };
      }
      break;
    }
    default:
      throw new Error('unreachable');
  }
  out.elapsed_ms = Date.now() - start;
  if (opts.linger > 0) await new Promise(resolve => setTimeout(resolve, opts.linger));
  return out;
}

run().then(out => {
  process.stdout.write(JSON.stringify(out) + '\n', () => process.exit(0));
}, err => {
  process.stderr.write('client harness failure: ' + (err && err.stack || err) + '\n');
  process.exit(1);
});
