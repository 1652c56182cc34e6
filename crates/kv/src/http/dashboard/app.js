// Skiff dashboard: follows every node's /v1/skiff/events stream and draws the cluster.
// Plain browser JavaScript, no build step, no dependencies.
'use strict';
(() => {
  const $ = (sel) => document.querySelector(sel);
  const KINDS = ['append', 'heartbeat', 'vote', 'pre-vote', 'snapshot', 'timeout-now', 'read-index'];
  const MAX_COLUMNS = 30; // log columns shown
  const MAX_DOTS = 160;

  const nodes = new Map(); // id -> node record (see newNode)
  let selfNode = null; // the node that served this page (id learnt from its first frame)
  let demo = null; // the answer of GET /v1/skiff/demo, or null
  let demoChecked = false;
  let token = sessionStorage.getItem('skiff-token') || '';
  const events = []; // newest first: {key, wall, el}
  const seenEvents = new Set();
  const dots = [];
  const recentMsgs = [];
  let hostNote = '';
  let dirty = true;
  let lastRender = 0;

  const byId = (a, b) => a.localeCompare(b, undefined, { numeric: true });
  const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
  const dash = (v) => (v === null || v === undefined ? '—' : String(v));
  const termHue = (t) => Math.round((t * 137.508) % 360);
  const setText = (el, text) => { if (el.textContent !== text) el.textContent = text; };
  const setAttr = (el, name, value) => { if (el.getAttribute(name) !== value) el.setAttribute(name, value); };

  function newNode(id, base) {
    return { id, base, es: null, frame: null, at: 0, wall: 0, epoch: 0, gotFrame: false,
      backoff: 0, retry: null, probing: false, demoRunning: undefined, card: null, self: false };
  }

  // ---- streams ---------------------------------------------------------------------------
  function streamUrl(base) {
    return base + '/v1/skiff/events' + (token ? '?token=' + encodeURIComponent(token) : '');
  }

  function connect(n) {
    clearTimeout(n.retry);
    if (n.es) n.es.close();
    if (n.base === null) return;
    const es = new EventSource(streamUrl(n.base));
    n.es = es;
    es.addEventListener('state', (ev) => onFrame(n, ev.data));
    es.onerror = () => {
      if (n.es !== es) return;
      if (!n.gotFrame) probe(n);
      if (es.readyState === EventSource.CLOSED) {
        n.backoff = Math.min(10000, n.backoff ? n.backoff * 2 : 500);
        n.retry = setTimeout(() => connect(n), n.backoff);
      }
      dirty = true;
    };
  }

  // An EventSource does not tell why it failed: ask once with fetch to spot a 403.
  async function probe(n) {
    if (n.probing) return;
    n.probing = true;
    const ctl = new AbortController();
    try {
      const r = await fetch(streamUrl(n.base), { signal: ctl.signal });
      if (r.status === 403) {
        const text = await r.text();
        if (/^Permission denied/.test(text)) needToken(`${n.id || 'The node serving this page'}: ${text}`);
      }
    } catch (e) { /* unreachable: the stream shows it */ }
    ctl.abort();
    setTimeout(() => { n.probing = false; }, 5000);
  }

  function ensureNode(id, http, scheme) {
    let n = nodes.get(id);
    const base = http ? `${scheme || 'http'}://${http}` : null;
    if (!n) {
      n = newNode(id, base);
      nodes.set(id, n);
      connect(n);
      dirty = true;
    } else if (!n.self && base && n.base !== base) {
      n.base = base;
      connect(n);
    }
    return n;
  }

  function onFrame(n, data) {
    let f;
    try { f = JSON.parse(data); } catch (e) { return; }
    if (!f || typeof f.id !== 'string') return;
    if (n.self && !n.id) {
      n.id = f.id;
      const mine = (f.members || []).find((m) => m.id === f.id);
      if (mine && mine.http && mine.http !== location.host) {
        hostNote = ` · if the other nodes stay unreachable, open this page at ${mine.scheme || 'http'}://${mine.http}/ (they accept members' addresses only)`;
      }
      const old = nodes.get(f.id);
      if (old && old !== n) {
        if (old.es) old.es.close();
        clearTimeout(old.retry);
        if (old.card) old.card.el.remove();
        n.demoRunning = old.demoRunning;
      }
      nodes.set(f.id, n);
    }
    if (f.id !== n.id) return;
    const now = performance.now();
    if (n.frame && f.uptime_ms < n.frame.uptime_ms) n.epoch += 1; // restarted: its seqs start again
    const prev = n.frame;
    n.frame = f; n.at = now; n.wall = Date.now(); n.gotFrame = true; n.backoff = 0;
    for (const m of f.members || []) if (m && m.id) ensureNode(m.id, m.http, m.scheme);
    ingestEvents(n, f);
    ingestMessages(n, f, prev, now);
    dirty = true;
  }

  function ingestEvents(n, f) {
    for (const e of f.events || []) {
      const key = `${n.id}#${n.epoch}#${e.seq}`;
      if (seenEvents.has(key)) continue;
      seenEvents.add(key);
      // Events of one node in their order even when they share a millisecond.
      let wall = n.wall - Math.max(0, f.uptime_ms - e.at_ms);
      if (n.lastEventWall !== undefined && wall <= n.lastEventWall) wall = n.lastEventWall + 0.01;
      n.lastEventWall = wall;
      const li = document.createElement('li');
      const cls = /became leader/.test(e.text) ? 'ev-leader' : /election|vote/.test(e.text) ? 'ev-election'
        : /committed/.test(e.text) ? 'ev-commit' : /pause|resum|kill|restart|cut|drop|delay|unreachable|stepped down|fault|heal/.test(e.text) ? 'ev-fault' : '';
      if (cls) li.className = cls;
      const t = new Date(wall);
      const hms = t.toTimeString().slice(0, 8) + '.' + String(t.getMilliseconds()).padStart(3, '0').slice(0, 1);
      li.innerHTML = `<time>${hms}</time> <span class="ev-text">${esc(e.text)}</span> <span class="ev-node">from ${esc(n.id)}</span>`;
      let i = 0;
      while (i < events.length && events[i].wall >= wall) i++;
      const list = $('#events');
      list.insertBefore(li, events[i] ? events[i].el : null);
      events.splice(i, 0, { key, wall, el: li });
      while (events.length > 80) events.pop().el.remove();
    }
  }

  function ingestMessages(n, f, prev, now) {
    const msgs = f.messages || [];
    if (!msgs.length) return;
    // Replay the messages one frame late, spread as they were sent between the two frames.
    const span = prev ? Math.min(1000, Math.max(1, f.uptime_ms - prev.uptime_ms)) : 100;
    const from0 = f.uptime_ms - span;
    const dur = (f.tick_ms || 10) >= 50 ? 1600 : 750;
    for (const m of msgs) {
      const delay = Math.min(span, Math.max(0, m.at_ms - from0));
      dots.push({ from: n.id, to: m.to, kind: m.kind || 'other', start: now + delay, dur, el: null });
      recentMsgs.unshift(`${n.id} → ${m.to}: ${m.text || m.kind} (term ${dash(m.term)})`);
    }
    recentMsgs.length = Math.min(recentMsgs.length, 8);
    while (dots.length > MAX_DOTS) { const d = dots.shift(); if (d.el) d.el.remove(); }
  }

  // ---- what a node is now ---------------------------------------------------------------
  function staleMs(n) { return Math.max(1500, ((n.frame && n.frame.tick_ms) || 10) * 15); }
  function isUp(n) { return !!n.frame && performance.now() - n.at < staleMs(n); }
  function learners() {
    const set = new Set();
    for (const n of nodes.values()) if (n.frame && isUp(n)) for (const l of n.frame.learners || []) set.add(l);
    return set;
  }
  function roleOf(n, learnerSet) {
    if (demo && n.demoRunning === false) return 'killed';
    if (!isUp(n)) return 'unreachable';
    if (n.frame.paused) return 'paused';
    if (learnerSet.has(n.id)) return 'learner';
    return n.frame.role || 'follower';
  }
  // The leader the page trusts: a live node that says it leads, with the highest term.
  function leaderNode() {
    let best = null;
    for (const n of nodes.values()) {
      if (isUp(n) && n.frame.role === 'leader' && !n.frame.paused && (!best || n.frame.term > best.frame.term)) best = n;
    }
    return best;
  }
  function sortedNodes() { return [...nodes.values()].filter((n) => n.id).sort((a, b) => byId(a.id, b.id)); }
  function anyBase(exclude) {
    const up = sortedNodes().filter((n) => isUp(n) && n.id !== exclude && n.base !== null);
    if (selfNode && up.includes(selfNode)) return selfNode.base;
    if (up.length) return up[0].base;
    return '';
  }

  // ---- requests and actions --------------------------------------------------------------
  async function request(base, method, path, body) {
    const headers = {};
    if (token) headers['X-Consul-Token'] = token;
    const init = { method, headers };
    if (body !== undefined) {
      if (typeof body === 'string') init.body = body;
      else { headers['Content-Type'] = 'application/json'; init.body = JSON.stringify(body); }
    }
    const r = await fetch(base + path, init);
    const text = await r.text();
    if (r.status === 403 && /^Permission denied/.test(text)) needToken(text);
    return { ok: r.ok, status: r.status, text: text.trim() };
  }

  function status(text, kind) {
    const el = $('#action-status');
    el.textContent = text;
    el.className = 'status' + (kind ? ' ' + kind : '');
  }

  async function run(label, base, method, path, body, faultRoute) {
    status(`${label}…`, 'busy');
    try {
      const r = await request(base, method, path, body);
      if (r.ok) {
        // A short answer (`true`) is news; a JSON object is for scripts, not this line.
        const detail = r.text && r.text.length <= 80 && !/^[[{]/.test(r.text) ? ' ' + r.text : '';
        status(`${label}: done.${detail}`, 'ok');
        return r;
      }
      let msg = `${label} failed (${r.status}): ${errorText(r.text) || 'no message'}`;
      if (r.status === 403 && faultRoute && !/^Permission denied|fault/i.test(r.text)) msg += ' — fault injection is off on this node.';
      status(msg, 'err');
      return r;
    } catch (e) {
      status(`${label} failed: could not reach ${base || 'this page\'s node'} (${e.message})`, 'err');
      return null;
    }
  }

  /** The API's errors are `{"error": "..."}`; other answers (a 403 from the token check) are text. */
  function errorText(text) {
    try {
      const body = JSON.parse(text);
      if (body && typeof body.error === 'string') return body.error + (body.leader ? ` (leader: ${body.leader})` : '');
    } catch (e) { /* not JSON */ }
    return text;
  }

  function needToken(why) {
    const box = $('#token-box');
    if (box.hidden) { box.hidden = false; $('#token').value = token; }
    status(`${why} — enter a token above.`, 'err');
  }

  function kvPath(key) { return '/v1/kv/' + key.split('/').map(encodeURIComponent).join('/'); }

  async function kv(op) {
    const key = $('#kv-key').value;
    const out = $('#kv-result');
    if (!key) { out.textContent = 'Enter a key first.'; $('#kv-key').focus(); return; }
    const base = anyBase();
    let r;
    if (op === 'put') r = await run(`Put ${key}`, base, 'PUT', kvPath(key), $('#kv-value').value);
    else if (op === 'get') r = await run(`Get ${key}`, base, 'GET', kvPath(key) + '?raw');
    else r = await run(`Delete ${key}`, base, 'DELETE', kvPath(key));
    if (!r) { out.textContent = $('#action-status').textContent; return; }
    if (op === 'get' && r.status === 404) out.textContent = `${key}: no such key.`;
    else if (!r.ok) out.textContent = `Error ${r.status}: ${errorText(r.text)}`;
    else if (op === 'get') out.textContent = `${key} = ${JSON.stringify(r.text)}`;
    else out.textContent = op === 'put' ? `Stored ${key}.` : `Deleted ${key}.`;
  }

  function otherMembers(id) {
    const ids = new Set();
    for (const n of nodes.values()) {
      if (!n.frame) continue;
      for (const m of n.frame.members || []) ids.add(m.id);
    }
    ids.delete(id);
    return [...ids].sort(byId);
  }

  async function act(action, id) {
    const n = id ? nodes.get(id) : null;
    if (id && !n) { status(`No node ${id}.`, 'err'); return; }
    if (n && n.base === null && ['pause', 'resume', 'cut', 'heal', 'slow'].includes(action)) {
      status(`${id} has no HTTP address: it cannot be asked directly.`, 'err'); return;
    }
    const fault = (body) => run(body.action === 'drop' ? `Cut ${id} off` : `Slow ${id}'s links`, n.base, 'POST', '/v1/skiff/faults', body, true);
    switch (action) {
      case 'pause': return run(`Pause ${id}`, n.base, 'POST', '/v1/skiff/pause', undefined, true);
      case 'resume': return run(`Resume ${id}`, n.base, 'DELETE', '/v1/skiff/pause', undefined, true);
      case 'cut': return fault({ action: 'drop', peers: otherMembers(id), direction: 'both' });
      case 'slow': return fault({ action: 'delay', delay_ms: 200, peers: otherMembers(id), direction: 'both' });
      case 'heal': return run(`Heal ${id}'s links`, n.base, 'DELETE', '/v1/skiff/faults', undefined, true);
      case 'transfer':
        return run(`Transfer leadership to ${id}`, anyBase(), 'POST', '/v1/operator/raft/transfer-leader?id=' + encodeURIComponent(id));
      case 'kill': return run(`Kill ${id}`, anyBase(id), 'POST', `/v1/skiff/demo/nodes/${encodeURIComponent(id)}/kill`).then(pollDemo);
      case 'restart': return run(`Restart ${id}`, anyBase(id), 'POST', `/v1/skiff/demo/nodes/${encodeURIComponent(id)}/restart`).then(pollDemo);
      case 'promote': {
        const leader = leaderNode();
        return run(`Promote ${id} to voter`, leader ? leader.base : anyBase(), 'POST', `/v1/skiff/members/${encodeURIComponent(id)}/promote`);
      }
      case 'add-learner': {
        const base = anyBase();
        const r = await run('Add a learner', base, 'POST', '/v1/skiff/demo/nodes');
        if (r && r.ok) {
          try {
            const j = JSON.parse(r.text);
            if (j.id) { ensureNode(j.id, j.http, schemeOf(base)); status(`Added learner ${j.id} at ${dash(j.http)}: promote it from its card once it has caught up.`, 'ok'); }
          } catch (e) { /* the status line shows the answer */ }
        }
        return pollDemo();
      }
      default: status(`Unknown action ${action}.`, 'err');
    }
  }

  function schemeOf(base) {
    const m = /^(https?):/.exec(base);
    return m ? m[1] : location.protocol.replace(':', '') || 'http';
  }

  let demoTimer = null;
  async function pollDemo() {
    clearTimeout(demoTimer);
    const base = anyBase();
    let next = 2000;
    try {
      const headers = token ? { 'X-Consul-Token': token } : {};
      const r = await fetch(base + '/v1/skiff/demo', { headers });
      if (r.status === 200) {
        demo = await r.json();
        for (const d of demo.nodes || []) {
          const n = ensureNode(d.id, d.http, schemeOf(base));
          n.demoRunning = d.running !== false;
        }
      } else if (r.status === 404) { demo = null; next = 15000; }
      demoChecked = true;
    } catch (e) { next = 2000; }
    $('#slow').hidden = !(demo && demo.slow);
    $('#demo-box').hidden = !demo;
    dirty = true;
    demoTimer = setTimeout(pollDemo, next);
  }

  // ---- node cards -------------------------------------------------------------------------
  const FIELDS = [['term', 'Term'], ['vote', 'Vote'], ['leader', 'Leader'], ['commit', 'Commit'], ['applied', 'Applied'],
    ['last', 'Last log'], ['snap', 'Snapshot'], ['up', 'Uptime']];
  const BUTTONS = [['pause', 'Pause'], ['resume', 'Resume'], ['cut', 'Cut off'], ['heal', 'Heal'], ['slow', 'Slow links +200 ms'],
    ['transfer', 'Make leader'], ['promote', 'Promote to voter'], ['kill', 'Kill'], ['restart', 'Restart']];

  function makeCard(n) {
    const el = document.createElement('article');
    el.className = 'card';
    el.dataset.node = n.id;
    const hid = 'card-' + n.id.replace(/[^\w-]/g, '_');
    el.setAttribute('aria-labelledby', hid);
    el.innerHTML = `<header><h3 id="${hid}">${esc(n.id)}</h3><span class="role"></span>` +
      `${n.self ? '<span class="here">serves this page</span>' : ''}</header>` +
      `<div class="timer" aria-hidden="true"><div class="bar"></div></div><p class="timer-text"></p>` +
      `<dl>${FIELDS.map(([k, label]) => `<div><dt>${label}</dt><dd data-f="${k}"></dd></div>`).join('')}</dl>` +
      `<p class="faults"></p>` +
      `<div class="actions" role="group" aria-label="Act on ${esc(n.id)}">` +
      BUTTONS.map(([a, label]) => `<button type="button" data-action="${a}" data-node="${esc(n.id)}">${label}</button>`).join('') +
      `</div>`;
    const dd = {};
    el.querySelectorAll('dd').forEach((d) => { dd[d.dataset.f] = d; });
    const btn = {};
    el.querySelectorAll('button').forEach((b) => { btn[b.dataset.action] = b; });
    n.card = { el, dd, btn, role: el.querySelector('.role'), bar: el.querySelector('.bar'),
      timerText: el.querySelector('.timer-text'), faults: el.querySelector('.faults') };
    return el;
  }

  function faultText(f) {
    if (!f || f.faults === null || f.faults === undefined) return 'Fault injection off.';
    if (!f.faults.length) return 'Links: normal.';
    return 'Links: ' + f.faults.map((x) => {
      const dir = x.direction === 'in' ? '←' : x.direction === 'out' ? '→' : '↔';
      const what = x.action === 'drop' ? 'cut' : x.action === 'delay' ? `+${x.delay_ms} ms` : x.action;
      return `${what} ${dir} ${(x.peers || []).join(', ')}`;
    }).join('; ') + '.';
  }

  function fmtUptime(ms) {
    const s = Math.floor(ms / 1000);
    return s < 60 ? `${s} s` : s < 3600 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  }

  function renderCards(list, learnerSet) {
    const box = $('#nodes');
    const leader = leaderNode();
    const empty = box.querySelector('.empty');
    if (list.length && empty) empty.remove();
    list.forEach((n, i) => {
      if (!n.card) makeCard(n);
      const c = n.card;
      if (box.children[i] !== c.el) box.insertBefore(c.el, box.children[i] || null);
      const role = roleOf(n, learnerSet);
      const f = n.frame;
      setAttr(c.el, 'data-role', role);
      setAttr(c.el, 'data-term', f ? String(f.term) : '');
      c.el.className = `card r-${role}` + (isUp(n) ? '' : ' stale');
      let word = role;
      if (role === 'learner' && f.role !== 'follower') word += ` (${f.role})`;
      if (role === 'paused' && f) word += ` (${learnerSet.has(n.id) ? 'learner' : f.role})`;
      if ((role === 'unreachable' || role === 'killed') && f) word += ` (last seen as ${f.role})`;
      if (role === 'leader' && leader && leader !== n) word += ` (stale: term ${f.term} < ${leader.frame.term})`;
      setText(c.role, word);
      const d = c.dd;
      setText(d.term, f ? String(f.term) : '—');
      setText(d.vote, f ? dash(f.voted_for) : '—');
      setText(d.leader, f ? dash(f.leader) : '—');
      setText(d.commit, f ? String(f.commit) : '—');
      setText(d.applied, f ? String(f.applied) : '—');
      setText(d.last, f && f.last_log ? `${f.last_log.index} (term ${f.last_log.term})` : '—');
      setText(d.snap, f ? `${f.snapshot_index} (log from ${f.first_index})` : '—');
      setText(d.up, f ? fmtUptime(f.uptime_ms) + (isUp(n) ? '' : ' (stale)') : '—');
      setText(c.faults, f ? faultText(f) : (n.base === null ? 'No HTTP address known.' : 'No frame yet.'));
      const learner = learnerSet.has(n.id);
      c.btn.kill.hidden = c.btn.restart.hidden = !demo;
      c.btn.promote.hidden = !learner;
      c.btn.transfer.hidden = learner;
      c.btn.pause.classList.toggle('dim', !!(f && f.paused));
      c.btn.resume.classList.toggle('dim', !(f && f.paused));
      c.btn.kill.classList.toggle('dim', role === 'killed');
      c.btn.restart.classList.toggle('dim', role !== 'killed');
      setText(c.timerText, timerWords(n, role));
    });
  }

  // The election timer's remaining fraction now (animated between frames), or null.
  function timerLeft(n, now) {
    const f = n.frame;
    if (!f || !f.election_timer || !isUp(n)) return null;
    const t = f.election_timer;
    const elapsed = t.elapsed_ms + (f.paused ? 0 : now - n.at);
    return { ms: Math.max(0, t.timeout_ms - elapsed), frac: Math.max(0, Math.min(1, 1 - elapsed / t.timeout_ms)) };
  }
  function timerWords(n, role) {
    if (!n.frame || !isUp(n)) return 'Election timer: unknown.';
    if (role === 'leader' || n.frame.role === 'leader') return 'Leader: no election timer.';
    const left = timerLeft(n, performance.now());
    if (!left) return 'No election timer.';
    return n.frame.paused ? 'Paused: timer frozen.' : `Election timeout in ${(left.ms / 1000).toFixed(1)} s.`;
  }

  // ---- the log view ------------------------------------------------------------------------
  // Rows and cells are kept and changed in place (keyed by node and index), so a reader or a
  // test holding a cell does not lose it at every frame.
  const logRows = new Map(); // node id -> {tr, cells: Map(index -> td)}
  let logHead = '';

  function cellSpec(n, f, i, entries, leaderRef, leader) {
    const lastIndex = f.last_log ? f.last_log.index : 0;
    if (entries.has(i)) {
      const t = entries.get(i);
      const committed = i <= f.commit;
      const differs = !!(leader && leader !== n && leaderRef.has(i) && leaderRef.get(i) !== t);
      const words = `${committed ? 'committed' : 'not committed'}${differs ? ', differs from the leader' : ''}`;
      return { data: { index: String(i), term: String(t), committed: String(committed) },
        cls: `cell ${committed ? 'c' : 'u'}${differs ? ' x' : ''}`, hue: termHue(t), title: `index ${i}, term ${t}, ${words}`,
        html: `${t}<span class="sr">, ${words}</span>` };
    }
    if (i <= lastIndex && (i < f.first_index || i <= f.snapshot_index)) {
      return { data: {}, cls: 'cell snap', title: `index ${i}: in the snapshot`, html: 'S<span class="sr"> in snapshot</span>' };
    }
    if (i <= lastIndex) return { data: {}, cls: 'cell gap', title: `index ${i}: in the log, not in this frame`, html: '…' };
    return { data: {}, cls: 'cell none', title: '', html: '' };
  }

  function applyCell(td, spec) {
    const sig = JSON.stringify(spec);
    if (td.sig === sig) return;
    td.sig = sig;
    for (const k of ['index', 'term', 'committed']) {
      if (k in spec.data) td.setAttribute('data-' + k, spec.data[k]); else td.removeAttribute('data-' + k);
    }
    td.className = spec.cls;
    if (spec.hue !== undefined) td.style.setProperty('--h', spec.hue); else td.style.removeProperty('--h');
    if (spec.title) td.title = spec.title; else td.removeAttribute('title');
    td.innerHTML = spec.html;
  }

  function renderLog(list) {
    const withFrames = list.filter((n) => n.frame);
    const table = $('#log');
    const wrap = table.parentElement;
    const atEnd = wrap.scrollLeft + wrap.clientWidth >= wrap.scrollWidth - 4;
    let max = 0;
    for (const n of withFrames) max = Math.max(max, n.frame.last_log ? n.frame.last_log.index : 0);
    if (!withFrames.length || max === 0) {
      if (logHead !== 'empty') { table.innerHTML = '<tbody><tr><td class="empty">No log entries yet.</td></tr></tbody>'; logHead = 'empty'; logRows.clear(); }
      return;
    }
    let start = max;
    for (const n of withFrames) {
      const log = n.frame.log || [];
      if (log.length && isUp(n)) start = Math.min(start, log[0].index);
    }
    start = Math.max(start, max - MAX_COLUMNS + 1, 1);
    if (logHead === 'empty' || !table.tHead) {
      table.innerHTML = '<caption class="sr">Each node\'s log tail: columns are log indexes, cells show the entry\'s term.</caption><thead></thead><tbody></tbody>';
      logHead = '';
    }
    const head = `${start}-${max}`;
    if (head !== logHead) {
      let h = '<tr><th scope="col">Node</th>';
      for (let i = start; i <= max; i++) h += `<th scope="col" class="idx">${i}</th>`;
      table.tHead.innerHTML = h + '</tr>';
      logHead = head;
    }
    const leader = leaderNode();
    const ref = new Map();
    if (leader) for (const e of leader.frame.log || []) ref.set(e.index, e.term);
    const body = table.tBodies[0];
    withFrames.forEach((n, r) => {
      let row = logRows.get(n.id);
      if (!row) {
        const tr = document.createElement('tr');
        tr.setAttribute('data-log-node', n.id);
        tr.innerHTML = `<th scope="row">${esc(n.id)}<span class="lc"></span></th>`;
        row = { tr, lc: tr.querySelector('.lc'), cells: new Map() };
        logRows.set(n.id, row);
      }
      if (body.children[r] !== row.tr) body.insertBefore(row.tr, body.children[r] || null);
      const f = n.frame;
      row.tr.classList.toggle('stale', !isUp(n));
      setText(row.lc, `commit ${f.commit}`);
      const entries = new Map((f.log || []).map((e) => [e.index, e.term]));
      for (const [i, td] of row.cells) if (i < start || i > max) { td.remove(); row.cells.delete(i); }
      let prev = row.tr.firstElementChild;
      for (let i = start; i <= max; i++) {
        let td = row.cells.get(i);
        if (!td) { td = document.createElement('td'); row.cells.set(i, td); }
        if (prev.nextElementSibling !== td) row.tr.insertBefore(td, prev.nextElementSibling);
        applyCell(td, cellSpec(n, f, i, entries, ref, leader));
        prev = td;
      }
    });
    if (atEnd) wrap.scrollLeft = wrap.scrollWidth;
  }

  // ---- peers, membership, rates ----------------------------------------------------------
  function renderPeers(list) {
    const leader = leaderNode();
    const src = leader || list.find((n) => isUp(n));
    const body = $('#peers tbody');
    if (!src) { body.innerHTML = '<tr><td colspan="7">No live node.</td></tr>'; setText($('#membership'), ''); return; }
    const f = src.frame;
    setText($('#peers-caption'), leader ? `Peers as the leader ${src.id} sees them` : `Peers as ${src.id} sees them (no leader known)`);
    const last = f.last_log ? f.last_log.index : 0;
    body.innerHTML = (f.peers || []).map((p) => {
      const behind = leader && p.match !== null && p.match !== undefined && last - p.match > 0 ? ` <span class="lag">(${last - p.match} behind)</span>` : '';
      return `<tr><th scope="row">${esc(p.id)}</th><td>${p.voter ? 'voter' : 'learner'}</td><td>${dash(p.match)}${behind}</td>` +
        `<td>${dash(p.next)}</td><td class="${p.connected ? 'okc' : 'bad'}">${p.connected ? '✓ connected' : '✗ down'}</td>` +
        `<td>${p.last_contact_ms === null || p.last_contact_ms === undefined ? '—' : p.last_contact_ms + ' ms ago'}</td>` +
        `<td>${typeof p.rtt_ms === 'number' ? p.rtt_ms.toFixed(1) + ' ms' : '—'}</td></tr>`;
    }).join('') || '<tr><td colspan="7">No peers.</td></tr>';
    const v = (f.voters || []).join(', ') || 'none';
    const l = (f.learners || []).join(', ') || 'none';
    setText($('#membership'), `Voters: ${v}. Learners: ${l}. (As ${src.id} knows it, term ${f.term}.)`);
  }

  function renderRates(list) {
    const seen = new Set();
    for (const n of list) if (n.frame) for (const k of Object.keys(n.frame.messages_per_s || {})) seen.add(k);
    const order = (k) => { const i = KINDS.indexOf(k.replace(/-response$/, '')); return (i < 0 ? 99 : i) * 2 + (/-response$/.test(k) ? 1 : 0); };
    const kinds = [...seen].sort((a, b) => order(a) - order(b) || a.localeCompare(b));
    const shown = list.filter((n) => n.frame);
    const t = $('#rates');
    t.tHead.innerHTML = '<tr><th scope="col">Kind</th>' + shown.map((n) => `<th scope="col">${esc(n.id)}</th>`).join('') + '</tr>';
    const cell = (n, k) => {
      const r = n.frame.messages_per_s || {};
      return isUp(n) && typeof r[k] === 'number' ? (r[k] ? r[k].toFixed(1) : '0') : '—';
    };
    t.tBodies[0].innerHTML = kinds.map((k) => `<tr><th scope="row"><span class="dot k-${kindClass(k)}${/-response$/.test(k) ? ' resp' : ''}"></span>${esc(k)}</th>` +
      shown.map((n) => `<td>${cell(n, k)}</td>`).join('') + '</tr>').join('') +
      '<tr class="skipped"><th scope="row">samples skipped</th>' + shown.map((n) => `<td>${dash(n.frame.messages_skipped)}</td>`).join('') + '</tr>';
    $('#msg-log').innerHTML = recentMsgs.map((m) => `<li>${esc(m)}</li>`).join('') || '<li>None yet.</li>';
  }

  function kindClass(kind) {
    const base = kind.replace(/-response$/, '');
    return ['append', 'heartbeat', 'vote', 'pre-vote'].includes(base) ? base : 'other';
  }

  // ---- the ring --------------------------------------------------------------------------
  const SVG = 'http://www.w3.org/2000/svg';
  const pos = new Map();
  let ringKey = '';
  const R_NODE = 26;
  const TIMER_R = 32;
  const TIMER_C = 2 * Math.PI * TIMER_R;

  function svg(tag, attrs, parent) {
    const el = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
    if (parent) parent.appendChild(el);
    return el;
  }

  function renderRing(list, learnerSet) {
    const key = list.map((n) => n.id).join(',');
    const gLines = $('#ring-lines');
    const gNodes = $('#ring-nodes');
    if (key !== ringKey) {
      ringKey = key;
      pos.clear();
      gNodes.textContent = '';
      const k = list.length;
      list.forEach((n, i) => {
        const a = -Math.PI / 2 + (2 * Math.PI * i) / Math.max(1, k);
        const p = { x: Math.round(125 * Math.cos(a)), y: Math.round(125 * Math.sin(a)) };
        pos.set(n.id, p);
        const g = svg('g', { class: 'rn', transform: `translate(${p.x},${p.y})` }, gNodes);
        svg('circle', { r: TIMER_R, class: 'timer-bg' }, g);
        p.arc = svg('circle', { r: TIMER_R, class: 'timer-arc', transform: 'rotate(-90)', 'stroke-dasharray': `0 ${TIMER_C}` }, g);
        p.circle = svg('circle', { r: R_NODE, class: 'body' }, g);
        const id = svg('text', { y: -3, class: 'rid' }, g); id.textContent = n.id;
        p.term = svg('text', { y: 11, class: 'rterm' }, g);
        p.role = svg('text', { y: R_NODE + 20, class: 'rrole' }, g);
        p.g = g;
      });
    }
    gLines.textContent = '';
    for (let i = 0; i < list.length; i++) {
      for (let j = i + 1; j < list.length; j++) {
        const a = pos.get(list[i].id); const b = pos.get(list[j].id);
        const cut = linkFault(list[i], list[j].id) || linkFault(list[j], list[i].id);
        svg('line', { x1: a.x, y1: a.y, x2: b.x, y2: b.y, class: 'link' + (cut ? ' ' + cut : '') }, gLines);
      }
    }
    for (const n of list) {
      const p = pos.get(n.id);
      const role = roleOf(n, learnerSet);
      p.g.setAttribute('class', `rn r-${role}`);
      p.term.textContent = n.frame ? `t${n.frame.term}` : '';
      p.role.textContent = role;
    }
  }

  function linkFault(n, peer) {
    const fs = (n.frame && n.frame.faults) || [];
    let what = '';
    for (const f of fs) if ((f.peers || []).includes(peer)) what = f.action === 'drop' ? 'cut' : what || 'delayed';
    return what;
  }

  function animate(now) {
    for (const n of nodes.values()) {
      if (n.card) {
        const left = timerLeft(n, now);
        const frac = left ? left.frac : 0;
        n.card.bar.style.transform = `scaleX(${frac})`;
        n.card.bar.classList.toggle('low', frac < 0.25);
      }
      const p = n.id && pos.get(n.id);
      if (p) {
        const left = timerLeft(n, now);
        p.arc.setAttribute('stroke-dasharray', `${left ? (left.frac * TIMER_C).toFixed(1) : 0} ${TIMER_C}`);
      }
    }
    const g = $('#ring-dots');
    for (let i = dots.length - 1; i >= 0; i--) {
      const d = dots[i];
      const a = pos.get(d.from); const b = pos.get(d.to);
      const t = (now - d.start) / d.dur;
      if (t > 1 || !a || !b) { if (d.el) d.el.remove(); dots.splice(i, 1); continue; }
      if (t < 0) continue;
      if (!d.el) {
        const resp = /-response$/.test(d.kind);
        d.el = svg('circle', { r: resp ? 4 : 5, class: `msg k-${kindClass(d.kind)}${resp ? ' resp' : ''}` }, g);
      }
      const dx = b.x - a.x; const dy = b.y - a.y;
      const len = Math.hypot(dx, dy) || 1;
      const s = R_NODE / len; const e = 1 - s;
      const u = s + (e - s) * t;
      d.el.setAttribute('cx', (a.x + dx * u).toFixed(1));
      d.el.setAttribute('cy', (a.y + dy * u).toFixed(1));
    }
  }

  // ---- the page ----------------------------------------------------------------------------
  function renderConn(list) {
    const up = list.filter(isUp).map((n) => n.id);
    const down = list.filter((n) => !isUp(n)).map((n) => n.id);
    let text = list.length ? `Live: ${up.join(', ') || 'none'}` : 'Connecting…';
    if (down.length) text += ` · not answering: ${down.join(', ')}`;
    if (selfNode && selfNode.id) text += ` · page served by ${selfNode.id}`;
    if (list.length && !up.length) text += ' · retrying…';
    if (hostNote && list.some((n) => !n.self && !n.gotFrame)) text += hostNote;
    setText($('#conn'), text);
  }

  function render() {
    const list = sortedNodes();
    const learnerSet = learners();
    renderConn(list);
    renderCards(list, learnerSet);
    renderRing(list, learnerSet);
    renderLog(list);
    renderPeers(list);
    renderRates(list);
  }

  function loop(now) {
    if (dirty && now - lastRender > 120) { dirty = false; lastRender = now; render(); }
    animate(now);
    requestAnimationFrame(loop);
  }

  document.addEventListener('click', (e) => {
    const b = e.target.closest('button[data-action]');
    if (b) act(b.dataset.action, b.dataset.node);
  });
  $('#kv-form').addEventListener('submit', (e) => { e.preventDefault(); kv('put'); });
  $('#kv-get').addEventListener('click', () => kv('get'));
  $('#kv-delete').addEventListener('click', () => kv('delete'));
  const saveToken = () => {
    token = $('#token').value.trim();
    if (token) sessionStorage.setItem('skiff-token', token); else sessionStorage.removeItem('skiff-token');
    for (const n of nodes.values()) { n.backoff = 0; connect(n); }
    if (selfNode && !selfNode.id) connect(selfNode);
    status(token ? 'Token saved for this tab; reconnecting.' : 'Token cleared; reconnecting.', 'ok');
    pollDemo();
  };
  $('#token-box').addEventListener('submit', (e) => { e.preventDefault(); saveToken(); });
  if (token) { $('#token-box').hidden = false; $('#token').value = token; }

  selfNode = newNode(null, '');
  selfNode.self = true;
  connect(selfNode);
  pollDemo();
  setInterval(() => { dirty = true; }, 500);
  requestAnimationFrame(loop);
})();
