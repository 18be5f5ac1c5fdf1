// A foreign client of the bus's conversations, written from the wire protocol alone
// (src/messaging/headers.py and the replies the bus sends); nothing here comes from
// the Python package. tests/integration/test_node_conversations.py drives it.
//
//   node conversation_client.js '{"url": ..., "exchange": ..., ...}'
//
// It prints one JSON object a line on stdout. While reading a stream it prints
// {"event": "read", "n": k} after each item and waits for a line on stdin before it
// reads on (so the test can look at the responder in between); credit is granted
// only after that line comes.

'use strict';

const amqp = require('amqplib');
const crypto = require('node:crypto');
const readline = require('node:readline');

const DIRECT_REPLY_TO = 'amq.rabbitmq.reply-to';
const ERROR_REPLY = 'chimera.error';
const END_TYPE = 'chimera.end';
const CREDIT_TYPE = 'chimera.credit';
const CANCEL_TYPE = 'chimera.cancel';
const H = {
  deadline: 'x-conversation-deadline',
  stream: 'x-conversation-stream',
  control: 'x-conversation-control',
  credit: 'x-conversation-credit',
  errorType: 'x-chimera-error-type',
  errorMessage: 'x-chimera-error-message',
  failedAgent: 'x-chimera-failed-agent',
};

const args = JSON.parse(process.argv[2]);

function emit(event) {
  process.stdout.write(`${JSON.stringify(event)}\n`);
}

// chimera.v1.QueryRequest { Metadata metadata = 1; string query = 2; }: field 2,
// wire type 2 (length-delimited) is the tag byte 0x12, then a varint length.
function queryRequest(text) {
  const bytes = Buffer.from(text, 'utf8');
  return Buffer.concat([Buffer.from([0x12]), varint(bytes.length), bytes]);
}

function varint(n) {
  const out = [];
  while (n > 0x7f) {
    out.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  out.push(n);
  return Buffer.from(out);
}

// chimera.v1.QueryResponse { ...; string answer = 3; ... }: the answer field, or null.
function answerOf(body) {
  let at = 0;
  while (at < body.length) {
    const [tag, afterTag] = readVarint(body, at);
    if ((tag & 7) !== 2) throw new Error(`unexpected wire type in tag ${tag}`);
    const [length, start] = readVarint(body, afterTag);
    if (tag >>> 3 === 3) return body.subarray(start, start + length).toString('utf8');
    at = start + length;
  }
  return null;
}

function readVarint(buffer, at) {
  let value = 0;
  let shift = 0;
  for (;;) {
    const byte = buffer[at++];
    value += (byte & 0x7f) * 2 ** shift;
    if (byte < 0x80) return [value, at];
    shift += 7;
  }
}

function text(value) {
  return Buffer.isBuffer(value) ? value.toString('utf8') : value;
}

// Replies, by correlation id, as they arrive on our direct reply-to address.
class Replies {
  constructor() {
    this.queues = new Map();
  }

  expect(correlationId) {
    this.queues.set(correlationId, { items: [], waiter: null });
  }

  put(message) {
    const queue = this.queues.get(message.properties.correlationId);
    if (queue === undefined) return; // a late reply to something we gave up on
    if (queue.waiter) {
      const waiter = queue.waiter;
      queue.waiter = null;
      waiter(message);
    } else queue.items.push(message);
  }

  unread(correlationId) {
    return this.queues.get(correlationId).items.length;
  }

  next(correlationId, timeoutMs) {
    const queue = this.queues.get(correlationId);
    if (queue.items.length) return Promise.resolve(queue.items.shift());
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        queue.waiter = null;
        reject(new Error(`no reply within ${timeoutMs} ms [correlation_id=${correlationId}]`));
      }, timeoutMs);
      queue.waiter = (message) => {
        clearTimeout(timer);
        resolve(message);
      };
    });
  }
}

const stdin = readline.createInterface({ input: process.stdin });
const stdinLines = stdin[Symbol.asyncIterator]();

async function waitForTheTest() {
  const line = await stdinLines.next();
  if (line.done) throw new Error('stdin closed: the test has gone');
}

// Publishes a request; its correlation id and deadline (ms since the epoch).
function request(channel, replies, routingKey, body, extraHeaders) {
  const correlationId = crypto.randomUUID();
  const deadline = Date.now() + args.timeout_ms;
  replies.expect(correlationId);
  // No `type` property, as many clients send: the body (non-empty) is the message.
  channel.publish(args.exchange, routingKey, body, {
    correlationId,
    replyTo: DIRECT_REPLY_TO,
    contentType: 'application/x-protobuf',
    expiration: String(args.timeout_ms),
    headers: { [H.deadline]: deadline, ...extraHeaders },
  });
  return { correlationId, deadline };
}

// A control message (credit or cancel) for the responder's instance. It goes on the
// channel that consumes our reply-to address, with reply_to = amq.rabbitmq.reply-to:
// the broker writes our real address there, which is how the responder knows it is us.
function tell(channel, control, correlationId, type, headers) {
  channel.publish('', control, Buffer.alloc(0), {
    type,
    correlationId,
    replyTo: DIRECT_REPLY_TO,
    headers,
  });
}

async function askAndFail(channel, replies) {
  const { correlationId, deadline } = request(
    channel,
    replies,
    args.fail_key,
    queryRequest('Atlantis'),
    {},
  );
  const reply = await replies.next(correlationId, args.timeout_ms);
  const props = reply.properties;
  const headers = props.headers || {};
  emit({
    event: 'error',
    correlation_id: correlationId,
    deadline_ms: deadline,
    reply_correlation_id: props.correlationId,
    type: props.type,
    content_type: props.contentType,
    headers: {
      error_type: text(headers[H.errorType]),
      error_message: text(headers[H.errorMessage]),
      failed_agent: text(headers[H.failedAgent]),
    },
    body: JSON.parse(reply.content.toString('utf8')),
  });
}

// Reads a whole stream of `count` items with a window; credit is granted as items
// are read, half a window at a time.
async function readStream(channel, replies, count, window, stopAfter) {
  const { correlationId } = request(
    channel,
    replies,
    args.stream_key,
    queryRequest(String(count)),
    { [H.stream]: window },
  );
  const grantEvery = Math.max(1, Math.floor(window / 2));
  const answers = [];
  let control = null;
  let unthanked = 0;
  let mostUnread = 0;
  for (;;) {
    const reply = await replies.next(correlationId, args.timeout_ms);
    const props = reply.properties;
    const headers = props.headers || {};
    control = control || text(headers[H.control]);
    const marker = text(headers[H.stream]);
    if (props.type === ERROR_REPLY) {
      emit({ event: 'stream_error', body: JSON.parse(reply.content.toString('utf8')) });
      return;
    }
    if (marker === 'end') {
      emit({
        event: 'end',
        correlation_id: correlationId,
        type: props.type,
        marker,
        body_length: reply.content.length,
        answers,
        most_unread: mostUnread,
      });
      return;
    }
    answers.push(answerOf(reply.content));
    mostUnread = Math.max(mostUnread, replies.unread(correlationId));
    emit({
      event: 'read',
      correlation_id: correlationId,
      n: answers.length,
      marker,
      unread: replies.unread(correlationId),
    });
    await waitForTheTest(); // the test has looked at the responder
    if (stopAfter !== undefined && answers.length >= stopAfter) {
      tell(channel, control, correlationId, CANCEL_TYPE, {});
      emit({ event: 'cancelled', correlation_id: correlationId, read: answers.length, control });
      return;
    }
    unthanked += 1;
    if (unthanked >= grantEvery) {
      tell(channel, control, correlationId, CREDIT_TYPE, { [H.credit]: unthanked });
      unthanked = 0;
    }
  }
}

async function main() {
  const connection = await amqp.connect(args.url);
  try {
    const channel = await connection.createChannel();
    const replies = new Replies();
    // Direct reply-to: consume the pseudo-queue (no-ack) before the first request.
    await channel.consume(DIRECT_REPLY_TO, (message) => replies.put(message), { noAck: true });
    await askAndFail(channel, replies);
    await readStream(channel, replies, args.count, args.window);
    if (args.cancel_after) {
      await readStream(channel, replies, 1000000, args.window, args.cancel_after);
    }
    await channel.close();
  } finally {
    stdin.close();
    await connection.close();
  }
  emit({ event: 'done' });
}

main().catch((error) => {
  process.stderr.write(`${error.stack || error}\n`);
  process.exit(1);
});
