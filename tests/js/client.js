// An autobahn-js client for interop tests: node client.js <scenario> <url> [json|msgpack]
// Prints one JSON line per observation; exits 0 when the scenario completed, 1 otherwise.
// Node 20 has no global WebSocket (autobahn-js 26 wants Node 22+): the `ws` package stands in.
if (typeof globalThis.WebSocket === 'undefined') { globalThis.WebSocket = require('ws'); }
const autobahn = require('autobahn');

const [scenario, url, ser = 'json'] = process.argv.slice(2);
const out = (obj) => console.log(JSON.stringify(obj));
const deadline = setTimeout(() => { out({ error: 'timeout' }); process.exit(1); }, 15000);
const finish = (conn, code) => { clearTimeout(deadline); conn.close(); setTimeout(() => process.exit(code), 100); };
const serializers = ser === 'msgpack' ? [new autobahn.serializer.MsgpackSerializer()] : [new autobahn.serializer.JSONSerializer()];

const scenarios = {
  // plain RPC and pub/sub
  basic: { options: {}, run: async (s) => {
    await s.register('com.js.add', (args) => args[0] + args[1]);
    out({ add: await s.call('com.js.add', [2, 3]) });
  } },
  ticket: { options: { authmethods: ['ticket'], authid: 'alice', onchallenge: () => 'alice-ticket' }, run: async (s) => {
    out({ authid: s.id && s._authid, authmethod: s._authmethod, authrole: s._authrole });
  } },
  wampcra: { options: { authmethods: ['wampcra'], authid: 'carol', onchallenge: (session, method, extra) => {
    const key = extra.salt ? autobahn.auth_cra.derive_key('carol-secret', extra.salt, extra.iterations, extra.keylen) : 'carol-secret';
    return autobahn.auth_cra.sign(key, extra.challenge);
  } }, run: async (s) => {
    out({ authid: s._authid, authmethod: s._authmethod, authrole: s._authrole });
  } },
  // progressive call results: the callee reports progress, the caller asked for it (issue 7)
  progress: { options: {}, run: async (s) => {
    await s.register('com.js.countdown', (args, kwargs, details) => {
      for (let i = args[0]; i > 0; i--) { if (details.progress) { details.progress([i]); } }
      return 'liftoff';
    });
    const seen = [];
    const result = await new Promise((resolve, reject) => {
      s.call('com.js.countdown', [3], {}, { receive_progress: true }).then(resolve, reject, (p) => seen.push(p));
    });
    out({ progress: seen, result });
  } },
  badticket: { options: { authmethods: ['ticket'], authid: 'alice', onchallenge: () => 'wrong' }, run: async () => {} },
  // pattern-based subscriptions (prefix, wildcard) and a retained event (issue 7)
  patterns: { options: {}, run: async (s) => {
    const events = [];
    let allSeen;
    const seen = new Promise((resolve) => { allSeen = resolve; });
    const on = (match) => (args, kwargs, details) => {
      events.push({ match, topic: details.topic, args, retained: details.retained || false });
      if (events.length === 5) { allSeen(); }
    };
    const opts = { acknowledge: true, exclude_me: false };
    await s.publish('com.js.news.kept', ['kept'], {}, { ...opts, retain: true });
    await s.subscribe('com.js.news.', on('prefix'), { match: 'prefix', get_retained: true });
    await s.subscribe('com.js..sport', on('wildcard'), { match: 'wildcard' });
    await s.publish('com.js.news.world', ['world'], {}, opts);
    await s.publish('com.js.eu.sport', ['sport'], {}, opts);
    await s.publish('com.js.news.sport', ['both'], {}, opts);
    await s.publish('com.js.other', ['none'], {}, opts);
    await seen;
    out({ events });
  } },
  // across the nodes of a cluster: a subscriber here, the publisher on another node (issue 13)
  subscriber: { options: {}, run: async (s) => {
    const events = [];
    let allSeen;
    const seen = new Promise((resolve) => { allSeen = resolve; });
    await s.subscribe('com.cross.', (args, kwargs, details) => {
      events.push({ topic: details.topic, args, kwargs, publisher: details.publisher || null });
      if (events.length === 2) { allSeen(); }
    }, { match: 'prefix' });
    out({ subscribed: true });
    await seen;
    out({ events });
  } },
  // across the nodes of a cluster: a caller here, the callee on another node (issue 13)
  caller: { options: {}, run: async (s) => {
    out({ sum: await s.call('com.cross.add', [2, 3]) });
    const seen = [];
    const result = await new Promise((resolve, reject) => {
      s.call('com.cross.countdown', [3], {}, { receive_progress: true }).then(resolve, reject, (p) => seen.push(p));
    });
    out({ progress: seen, result });
    try { await s.call('com.cross.fail'); } catch (e) { out({ error_uri: e.error, error_args: e.args }); }
  } },
};

const sc = scenarios[scenario];
const conn = new autobahn.Connection({ url, realm: 'realm1', serializers, max_retries: 0, ...sc.options });
conn.onopen = async (session, details) => {
  out({ joined: session.id, authid: details.authid, authmethod: details.authmethod, authrole: details.authrole });
  try { await sc.run(session); finish(conn, 0); } catch (e) { out({ error: String(e && (e.error || e)) }); finish(conn, 1); }
};
conn.onclose = (reason, details) => {
  out({ closed: reason, reason: details && details.reason, message: details && details.message });
  if (scenario === 'badticket') { clearTimeout(deadline); setTimeout(() => process.exit(0), 50); }
  return true; // no reconnect
};
conn.open();
