'use strict';
// Shared bits of the Bolt test peers: argument parsing and a quiet logger
// (sofa-rpc-node insists on a logger; set BOLT_PEER_DEBUG=1 to see its messages on stderr).

const util = require('util');

function parseArgs(argv, spec) {
  const out = Object.assign({}, spec);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) throw new Error('unexpected argument: ' + a);
    const key = a.slice(2);
    if (!(key in spec)) throw new Error('unknown option: ' + a);
    const v = argv[++i];
    if (v === undefined) throw new Error('missing value for ' + a);
    out[key] = typeof spec[key] === 'number' ? Number(v) : v;
    if (typeof spec[key] === 'number' && !Number.isFinite(out[key])) throw new Error('not a number: ' + a + ' ' + v);
  }
  return out;
}

function makeLogger(tag) {
  const debug = !!process.env.BOLT_PEER_DEBUG;
  const write = level => (...args) => {
    if (debug || level === 'error') {
      const msg = args.map(x => (x instanceof Error ? x.name + ': ' + x.message : x));
      process.stderr.write(`[${tag}] ${level} ${util.format(...msg)}\n`);
    }
  };
  return { debug: write('debug'), info: write('info'), warn: write('warn'), error: write('error') };
}

module.exports = { parseArgs, makeLogger };
