// One bench row with Node.js amqplib, the cross-language anchor of bench/run.py.
//
//   node amqplib_bench.js '{"work": "publish", "url": ..., "exchange": ..., "queue": ...,
//                           "routing_key": ..., "messages": N, "prefetch": P,
//                           "in_flight": 256, "body_size": 200, "deadline_s": 120}'
//
// The same work as the Python rows (bench/README.md): the caller (impl_amqplib.py)
// declared the topology and pre-filled the queue. Prints one JSON line:
// {"count": n, "seconds": s, "cpu_s": c} (c: this process's CPU while timed), and for rpc
// also "latencies_s": [...].
'use strict';

const amqp = require('amqplib');

const DIRECT_REPLY_TO = 'amq.rabbitmq.reply-to';
// TCP_NODELAY, as pika and aiormq set it: without it RPC round trips wait on Nagle (~40 ms).
const SOCKET = { noDelay: true };

function body(size) {
  // bench/common.py: BODY = bytes(range(256))[:BODY_SIZE]
  const buf = Buffer.alloc(size);
  for (let i = 0; i < size; i++) buf[i] = i % 256;
  return buf;
}

function seconds(startedNs) {
  return Number(process.hrtime.bigint() - startedNs) / 1e9;
}

// CPU seconds (user + system) of this process since `since` (a process.cpuUsage()).
function cpuSeconds(since) {
  const used = process.cpuUsage(since);
  return (used.user + used.system) / 1e6;
}

function deadline(ms, what) {
  let timer;
  const promise = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: deadline passed`)), ms);
  });
  return { promise, cancel: () => clearTimeout(timer) };
}

async function publish(args, conn) {
  const ch = await conn.createConfirmChannel();
  ch.on('return', () => { throw new Error('a publish was returned unroutable'); });
  const content = body(args.body_size);
  const opts = { persistent: true, mandatory: true };
  const publishOne = () => new Promise((resolve, reject) => {
    ch.publish(args.exchange, args.routing_key, content, opts, (err) => (err ? reject(err) : resolve()));
  });
  // PUBLISH_IN_FLIGHT publishers, each waiting for its confirm before the next.
  const shares = [];
  for (let i = 0; i < args.in_flight; i++) {
    shares.push(Math.floor(args.messages / args.in_flight) + (i < args.messages % args.in_flight ? 1 : 0));
  }
  const limit = deadline(args.deadline_s * 1000, 'publish');
  const cpu = process.cpuUsage();
  const started = process.hrtime.bigint();
  await Promise.race([
    Promise.all(shares.map(async (n) => { for (let i = 0; i < n; i++) await publishOne(); })),
    limit.promise,
  ]);
  const elapsed = seconds(started);
  limit.cancel();
  return { count: args.messages, seconds: elapsed, cpu_s: cpuSeconds(cpu) };
}

async function consume(args, conn) {
  const ch = await conn.createChannel();
  await ch.prefetch(args.prefetch);
  let acked = 0;
  let started;
  let elapsed = null;
  let cpuUsed = null;
  const cpu = process.cpuUsage();
  const done = new Promise((resolve) => {
    started = process.hrtime.bigint();
    ch.consume(args.queue, (msg) => {
      ch.ack(msg);
      acked += 1;
      if (acked === args.messages) {
        elapsed = seconds(started);
        cpuUsed = cpuSeconds(cpu);
        resolve();
      }
    }, { noAck: false });
  });
  const limit = deadline(args.deadline_s * 1000, 'consume');
  await Promise.race([done, limit.promise]).catch(() => {});
  limit.cancel();
  return {
    count: acked,
    seconds: elapsed === null ? seconds(started) : elapsed,
    cpu_s: cpuUsed === null ? cpuSeconds(cpu) : cpuUsed,
  };
}

async function respond(args, conn) {
  const ch = await conn.createChannel();
  await ch.prefetch(100);
  await ch.consume(args.queue, (msg) => {
    ch.sendToQueue(msg.properties.replyTo, msg.content, { correlationId: msg.properties.correlationId });
    ch.ack(msg);
  }, { noAck: false });
}

async function rpc(args, conn) {
  const server = await amqp.connect(args.url, SOCKET);
  try {
    await respond(args, server);
    const ch = await conn.createChannel();
    const pending = new Map();
    await ch.consume(DIRECT_REPLY_TO, (msg) => {
      const resolve = pending.get(msg.properties.correlationId);
      if (resolve) {
        pending.delete(msg.properties.correlationId);
        resolve();
      }
    }, { noAck: true });
    const content = body(args.body_size);
    const latencies = [];
    const limit = deadline(args.deadline_s * 1000, 'rpc');
    const cpu = process.cpuUsage();
    const started = process.hrtime.bigint();
    for (let i = 0; i < args.messages; i++) {
      const cid = String(i);
      const t0 = process.hrtime.bigint();
      const reply = new Promise((resolve) => pending.set(cid, resolve));
      ch.sendToQueue(args.queue, content, { persistent: true, correlationId: cid, replyTo: DIRECT_REPLY_TO });
      await Promise.race([reply, limit.promise]);
      latencies.push(seconds(t0));
    }
    const elapsed = seconds(started);
    const cpuUsed = cpuSeconds(cpu);
    limit.cancel();
    return { count: latencies.length, seconds: elapsed, cpu_s: cpuUsed, latencies_s: latencies };
  } finally {
    await server.close();
  }
}

const ROWS = { publish, consume100: consume, consume1: consume, rpc };

async function main() {
  const args = JSON.parse(process.argv[2]);
  const work = ROWS[args.work];
  if (!work) throw new Error(`unknown row ${args.work}; rows are ${Object.keys(ROWS)}`);
  const conn = await amqp.connect(args.url, SOCKET);
  try {
    const result = await work(args, conn);
    process.stdout.write(JSON.stringify(result) + '\n');
  } finally {
    await conn.close();
  }
}

main().then(() => process.exit(0), (err) => {
  process.stderr.write(`${err.stack || err}\n`);
  process.exit(1);
});
