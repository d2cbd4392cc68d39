// Voxplane NQS web UI. Plain JavaScript and SVG: no framework, no build
// step, no CDN. Every request carries the token as a bearer header; the
// token comes from the login form or from a share link's `?token=` and is
// kept in sessionStorage (gone when the tab closes).
'use strict';

const TOKEN_KEY = 'voxplane.nqs.token';
const PAGE_SIZE = 50;
const SVG_NS = 'http://www.w3.org/2000/svg';

// ---- tokens and requests -------------------------------------------------

function takeTokenFromUrl() {
  const url = new URL(location.href);
  const t = url.searchParams.get('token');
  if (t) {
    sessionStorage.setItem(TOKEN_KEY, t.trim());
    url.searchParams.delete('token');
    history.replaceState(null, '', url.pathname + url.search + url.hash);
  }
}

function token() { return sessionStorage.getItem(TOKEN_KEY); }

class HttpError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function request(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  const t = token();
  if (t) headers.Authorization = 'Bearer ' + t;
  const resp = await fetch(path, Object.assign({}, options, { headers }));
  if (resp.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin('The token was refused (expired, revoked or not for this service).');
    throw new HttpError(401, 'unauthorized');
  }
  if (!resp.ok) {
    let msg = resp.statusText;
    try { msg = (await resp.json()).error || msg; } catch (_) { /* not JSON */ }
    throw new HttpError(resp.status, msg);
  }
  return resp;
}

async function getJson(path) { return (await request(path)).json(); }

// ---- small DOM helpers ---------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

function svg(tag, attrs = {}, text) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function main() { return document.getElementById('main'); }

function setMain(...children) { main().replaceChildren(...children); }

function fmtTime(secs) {
  if (!secs) return '–';
  return new Date(secs * 1000).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}

function fmtNum(x, digits = 2) {
  return (typeof x === 'number' && isFinite(x)) ? x.toFixed(digits) : '–';
}

function mosClass(mos) {
  if (!mos) return 'none';
  if (mos >= 4.0) return 'good';
  if (mos >= 3.6) return 'fair';
  return 'poor';
}

function mosBadge(mos) {
  return el('span', { class: 'mos ' + mosClass(mos), text: mos ? mos.toFixed(2) : 'n/a' });
}

function callPath(id) { return '/calls/' + encodeURIComponent(id); }

function apiCallPath(id) { return '/api/calls/' + encodeURIComponent(id); }

// ---- login ---------------------------------------------------------------

function showLogin(message) {
  document.getElementById('who').textContent = '';
  document.getElementById('logout').hidden = true;
  const input = el('textarea', { name: 'token', placeholder: 'vxp1.…', required: true });
  const form = el('form', {
    class: 'login', id: 'login',
    onsubmit: (ev) => {
      ev.preventDefault();
      sessionStorage.setItem(TOKEN_KEY, input.value.trim());
      route();
    },
  },
  el('h2', { text: 'Sign in' }),
  el('p', { class: 'muted', text: 'Paste a bearer token (voxplane token create --admin | --reseller DOMAIN).' }),
  message ? el('p', { class: 'error', text: message }) : null,
  input,
  el('p', {}, el('button', { type: 'submit', text: 'Sign in' })));
  setMain(form);
}

// ---- call history --------------------------------------------------------

const SORTS = [
  ['start', 'Start'], ['from', 'From'], ['to', 'To'], ['domain', 'Domain'],
  ['mos', 'MOS'], ['streams', 'Legs'], ['final_status', 'Status'], ['reason', 'End'],
];

function historyState() {
  const q = new URLSearchParams(location.search);
  return {
    number: q.get('number') || '', domain: q.get('domain') || '',
    since: q.get('since') || '', until: q.get('until') || '',
    min_mos: q.get('min_mos') || '', max_mos: q.get('max_mos') || '',
    sort: q.get('sort') || 'start', order: q.get('order') || 'desc',
    page: Math.max(0, parseInt(q.get('page') || '0', 10) || 0),
  };
}

function setHistoryState(s) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(s)) {
    if (v === '' || (k === 'page' && v === 0) || (k === 'sort' && v === 'start') ||
        (k === 'order' && v === 'desc')) continue;
    q.set(k, v);
  }
  const qs = q.toString();
  history.pushState(null, '', '/' + (qs ? '?' + qs : ''));
  route();
}

// datetime-local (UTC) <-> Unix seconds.
function toUnix(v) { return v ? Math.floor(Date.parse(v + 'Z') / 1000) : ''; }

async function showHistory() {
  const s = historyState();
  const field = (name, label, attrs = {}) => el('label', {}, label,
    el('input', Object.assign({ name, value: s[name] }, attrs)));
  const form = el('form', {
    class: 'filters', id: 'filters',
    onsubmit: (ev) => {
      ev.preventDefault();
      const f = new FormData(form);
      const next = Object.assign({}, s, { page: 0 });
      for (const k of ['number', 'domain', 'since', 'until', 'min_mos', 'max_mos']) next[k] = (f.get(k) || '').trim();
      setHistoryState(next);
    },
  },
  field('number', 'Number', { placeholder: 'contains' }),
  field('domain', 'Domain', { placeholder: 'example.com' }),
  field('since', 'From (UTC)', { type: 'datetime-local', step: 1 }),
  field('until', 'To (UTC)', { type: 'datetime-local', step: 1 }),
  field('min_mos', 'MOS ≥', { type: 'number', step: '0.1', min: 1, max: 5, size: 4 }),
  field('max_mos', 'MOS ≤', { type: 'number', step: '0.1', min: 1, max: 5, size: 4 }),
  el('button', { type: 'submit', text: 'Filter' }),
  el('button', { type: 'button', text: 'Clear', onclick: () => setHistoryState({ sort: s.sort, order: s.order, page: 0 }) }));

  const status = el('p', { class: 'muted', text: 'Loading calls…' });
  setMain(el('h1', { text: 'Call history' }), form, status);

  const q = new URLSearchParams();
  for (const k of ['number', 'domain', 'min_mos', 'max_mos']) if (s[k]) q.set(k, s[k]);
  if (s.since) q.set('since', toUnix(s.since));
  if (s.until) q.set('until', toUnix(s.until));
  q.set('sort', s.sort);
  q.set('order', s.order);
  q.set('offset', s.page * PAGE_SIZE);
  q.set('limit', PAGE_SIZE + 1);
  let calls;
  try {
    calls = await getJson('/api/calls?' + q.toString());
  } catch (e) {
    if (e.status !== 401) status.replaceWith(el('p', { class: 'error', text: 'Could not load calls: ' + e.message }));
    return;
  }
  const more = calls.length > PAGE_SIZE;
  calls = calls.slice(0, PAGE_SIZE);

  const head = el('tr', {}, ...SORTS.map(([key, label]) => {
    const cls = 'sortable' + (s.sort === key ? ' sorted-' + s.order : '');
    return el('th', {
      class: cls, 'data-sort': key, text: label,
      onclick: () => setHistoryState(Object.assign({}, s, {
        sort: key, page: 0,
        order: s.sort === key && s.order === 'desc' ? 'asc' : 'desc',
      })),
    });
  }));
  const rows = calls.map((c) => el('tr', { 'data-call-id': c.call_id },
    el('td', {}, el('a', { href: callPath(c.call_id), class: 'call-link', text: fmtTime(c.start) })),
    el('td', { text: c.from }), el('td', { text: c.to }), el('td', { text: c.domain }),
    el('td', {}, mosBadge(c.mos)), el('td', { class: 'num', text: c.streams }),
    el('td', { class: 'num', text: c.final_status || '–' }), el('td', { text: c.reason })));
  const table = el('table', { id: 'calls' }, el('thead', {}, head), el('tbody', {}, ...rows));
  const pager = el('div', { class: 'pager' },
    el('button', { id: 'prev', disabled: s.page === 0, text: '← Newer',
      onclick: () => setHistoryState(Object.assign({}, s, { page: s.page - 1 })) }),
    el('span', { class: 'muted', id: 'page', text: `Page ${s.page + 1}` + (calls.length ? ` · calls ${s.page * PAGE_SIZE + 1}–${s.page * PAGE_SIZE + calls.length}` : '') }),
    el('button', { id: 'next', disabled: !more, text: 'Older →',
      onclick: () => setHistoryState(Object.assign({}, s, { page: s.page + 1 })) }));
  status.replaceWith(calls.length ? table : el('p', { class: 'muted', id: 'empty', text: 'No calls match.' }), pager);
}

// ---- call detail ---------------------------------------------------------

async function showCall(id) {
  setMain(el('p', { class: 'muted', text: 'Loading call…' }));
  let d;
  try {
    d = await getJson(apiCallPath(id));
  } catch (e) {
    if (e.status === 404) {
      setMain(el('h1', { text: 'Call not found' }),
        el('p', { class: 'error', id: 'not-found', text: 'No call ' + id + ' is visible with this token.' }),
        el('p', {}, el('a', { href: '/', text: '← Call history' })));
    } else if (e.status !== 401) {
      setMain(el('p', { class: 'error', text: 'Could not load the call: ' + e.message }));
    }
    return;
  }
  const c = d.call, r = d.record;
  document.title = 'Call ' + c.from + ' → ' + c.to + ' · Voxplane NQS';
  const facts = el('dl', { class: 'facts' });
  const fact = (k, v) => facts.append(el('dt', { text: k }), el('dd', {}, v));
  fact('Call-ID', c.call_id);
  fact('From', r.from_uri || c.from);
  fact('To', r.to_uri || c.to);
  fact('Domain', c.domain);
  fact('Start', fmtTime(c.start));
  fact('Answered', r.answer_ns ? fmtTime(r.answer_ns / 1e9) : '–');
  fact('Ended', r.end_ns ? fmtTime(r.end_ns / 1e9) : '–');
  fact('Final status', String(c.final_status || '–'));
  fact('Finished by', c.reason);
  fact('MOS (worst leg)', mosBadge(c.mos));

  const actions = el('p', {});
  if (d.pcap) {
    actions.append(el('a', {
      href: d.pcap.url, id: 'pcap-link', download: '',
      text: `Download pcap (${d.pcap.packets} packets, ${d.pcap.bytes} bytes)`,
      onclick: (ev) => { ev.preventDefault(); downloadPcap(d.pcap.url, c.call_id, ev.target); },
    }), ' ', el('span', { id: 'pcap-status', class: 'muted' }));
  } else {
    actions.append(el('span', { class: 'muted', text: 'No pcap stored for this call.' }));
  }
  if (window.nqsScope && window.nqsScope.scope !== 'share') {
    actions.append(' ', el('button', { id: 'share', text: 'Share link…', onclick: () => share(c.call_id, actions) }));
  }

  setMain(
    el('p', {}, el('a', { href: '/', text: '← Call history' })),
    el('h1', { text: `${c.from || '?'} → ${c.to || '?'}` }),
    el('section', {}, el('h2', { text: 'Call' }), facts, actions),
    el('section', { class: 'ladder', id: 'ladder' }, el('h2', { text: 'SIP ladder' }), ladder(d.sip)),
    el('section', {}, el('h2', { text: 'Legs' }), legs(d)));
}

async function downloadPcap(url, callId, link) {
  const status = document.getElementById('pcap-status');
  status.textContent = 'downloading…';
  try {
    const blob = await (await request(url)).blob();
    const a = el('a', { href: URL.createObjectURL(blob), download: callId.replace(/[^A-Za-z0-9._@-]/g, '_') + '.pcap' });
    document.body.append(a);
    a.click();
    a.remove();
    status.textContent = `downloaded ${blob.size} bytes`;
    link.dataset.downloaded = String(blob.size);
  } catch (e) {
    status.textContent = 'download failed: ' + e.message;
  }
}

async function share(callId, where) {
  try {
    const resp = await request(apiCallPath(callId) + '/share', {
      method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{}',
    });
    const s = await resp.json();
    const url = location.origin + s.page;
    where.append(el('p', {}, 'Share link (valid until ' + fmtTime(s.expires) + '): ',
      el('input', { id: 'share-link', value: url, size: 60, readonly: true })));
  } catch (e) {
    where.append(el('p', { class: 'error', text: 'Could not create a share link: ' + e.message }));
  }
}

// SIP ladder: one column per endpoint (address:port), one arrow per message.
function ladder(sip) {
  if (!sip || !sip.length) return el('p', { class: 'muted', text: 'No SIP messages recorded.' });
  const hosts = [];
  for (const m of sip) for (const h of [m.src, m.dst]) if (!hosts.includes(h)) hosts.push(h);
  const colW = 220, left = 90, top = 40, rowH = 26;
  const width = left + colW * (hosts.length - 1) + 120;
  const height = top + rowH * sip.length + 20;
  const x = (h) => left + colW * hosts.indexOf(h);
  const s = svg('svg', { width, height, viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': 'SIP ladder' });
  const defs = svg('defs');
  const marker = svg('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' });
  marker.append(svg('path', { d: 'M 0 0 L 10 5 L 0 10 z', fill: '#333' }));
  defs.append(marker);
  s.append(defs);
  hosts.forEach((h) => {
    s.append(svg('text', { x: x(h), y: 16, 'text-anchor': 'middle', 'font-weight': 600 }, h));
    s.append(svg('line', { x1: x(h), y1: 24, x2: x(h), y2: height - 8, stroke: '#9aa1ab', 'stroke-dasharray': '4 3' }));
  });
  const t0 = sip[0].ts_ns;
  sip.forEach((m, i) => {
    const y = top + rowH * i + 12;
    const label = m.method ? m.method : `${m.status}`;
    const color = m.method ? '#1f5fbf' : (m.status >= 300 ? '#c53030' : (m.status >= 200 ? '#1b873f' : '#6b7280'));
    const g = svg('g', { class: 'msg' });
    g.append(svg('title', {}, `${label} ${m.cseq} · ${m.src} → ${m.dst} · ${m.size} bytes`));
    g.append(svg('text', { x: 4, y: y + 4, fill: '#6b7280' }, '+' + ((m.ts_ns - t0) / 1e9).toFixed(3) + 's'));
    const x1 = x(m.src), x2 = x(m.dst);
    if (x1 === x2) {
      g.append(svg('path', { d: `M ${x1} ${y - 6} h 30 v 12 h -30`, fill: 'none', stroke: color, 'marker-end': 'url(#arrow)' }));
    } else {
      g.append(svg('line', { x1, y1: y, x2, y2: y, stroke: color, 'stroke-width': 1.5, 'marker-end': 'url(#arrow)' }));
    }
    g.append(svg('text', { x: (x1 + x2) / 2 + (x1 === x2 ? 40 : 0), y: y - 4, 'text-anchor': 'middle', fill: color }, `${label} (${m.cseq})`));
    s.append(g);
  });
  return s;
}

// A step chart over interval rows (each row covers INTERVAL_SECS from its
// start): several series sharing one y axis.
const INTERVAL_SECS = 10;

function fmtTick(v) {
  if (v === 0) return '0';
  return v < 1 ? v.toPrecision(2) : v < 10 ? v.toFixed(1) : v.toFixed(0);
}

function lineChart(title, points, series, unit) {
  const w = 340, h = 150, l = 44, r = 10, t = 24, b = 24;
  const s = svg('svg', { width: w, height: h, viewBox: `0 0 ${w} ${h}`, class: 'chart', role: 'img', 'aria-label': title });
  s.append(svg('text', { x: l, y: 12, 'font-weight': 600 }, title + (unit ? ` (${unit})` : '')));
  if (!points.length) {
    s.append(svg('text', { x: l, y: h / 2, class: 'no-data' }, 'no interval rows'));
    return s;
  }
  const xmin = Math.min(0, ...points.map((p) => p.x));
  const xmax = Math.max(...points.map((p) => p.x)) + INTERVAL_SECS;
  let ymax = 0;
  for (const [key] of series) for (const p of points) ymax = Math.max(ymax, p[key] || 0);
  ymax = ymax > 0 ? ymax * 1.15 : 1;
  const px = (v) => l + (w - l - r) * (v - xmin) / (xmax - xmin);
  const py = (v) => h - b - (h - t - b) * v / ymax;
  s.append(svg('line', { x1: l, y1: h - b, x2: w - r, y2: h - b, stroke: '#9aa1ab' }));
  s.append(svg('line', { x1: l, y1: t, x2: l, y2: h - b, stroke: '#9aa1ab' }));
  for (const f of [0, 0.5, 1]) {
    const v = ymax * f;
    s.append(svg('text', { x: l - 4, y: py(v) + 4, 'text-anchor': 'end', fill: '#6b7280' }, fmtTick(v)));
  }
  s.append(svg('text', { x: l, y: h - 6, fill: '#6b7280' }, `${xmin.toFixed(0)} s`));
  s.append(svg('text', { x: w - r, y: h - 6, 'text-anchor': 'end', fill: '#6b7280' }, `${xmax.toFixed(0)} s`));
  let legendX = w - r;
  [...series].reverse().forEach(([key, label, color]) => {
    const d = points.map((p, j) => {
      const y = py(p[key] || 0).toFixed(1);
      return `${j ? 'L' : 'M'} ${px(p.x).toFixed(1)} ${y} H ${px(p.x + INTERVAL_SECS).toFixed(1)}`;
    }).join(' ');
    s.append(svg('path', { d, fill: 'none', stroke: color, 'stroke-width': 1.5, class: 'series series-' + key }));
    s.append(svg('text', { x: legendX, y: 12, 'text-anchor': 'end', fill: color }, label));
    legendX -= 8 + 7 * label.length;
  });
  return s;
}

function legs(d) {
  if (!d.streams.length) return el('p', { class: 'muted', text: 'No RTP legs.' });
  const start = d.call.start;
  const box = el('div', { class: 'legs' });
  d.streams.forEach((st, n) => {
    const rows = d.intervals.filter((i) => i.stream === st.stream)
      .map((i) => ({ x: i.start_ns / 1e9 - start, max_jitter_ms: i.max_jitter_ms, mean_jitter_ms: i.mean_jitter_ms, lost_pct: i.lost_pct }));
    const metrics = el('table', { class: 'metrics' },
      ...[
        ['Codec', st.codec], ['Direction', st.direction], ['Source', st.src], ['Destination', st.dst],
        ['MOS (no buffer)', mosBadge(st.mos)], ['MOS fixed 1', fmtNum(st.mos_f1)], ['MOS fixed 2', fmtNum(st.mos_f2)],
        ['MOS adaptive', fmtNum(st.mos_adapt)], ['R factor', fmtNum(st.r_factor, 1)],
        ['Packets', `${st.packets} of ${st.expected}`], ['Lost', `${st.lost} (${fmtNum(st.lost_pct)} %)`],
        ['Burst ratio', fmtNum(st.burst_r)], ['Jitter (RFC 3550)', fmtNum(st.jitter_ms) + ' ms'],
        ['Max jitter', fmtNum(st.max_jitter_ms) + ' ms'], ['Max delta', fmtNum(st.max_delta_ms) + ' ms'],
      ].map(([k, v]) => el('tr', {}, el('th', { text: k }), el('td', {}, v))));
    const audio = el('audio', { controls: true, preload: 'none', 'data-leg': n });
    const audioStatus = el('span', { class: 'muted audio-status' });
    const load = el('button', {
      class: 'load-audio', text: '▶ Load audio',
      onclick: async () => {
        load.disabled = true;
        audioStatus.textContent = 'rendering…';
        try {
          const blob = await (await request(d.legs[n])).blob();
          audio.src = URL.createObjectURL(blob);
          audioStatus.textContent = `${blob.size} bytes of WAV`;
          await audio.play().catch(() => {});
        } catch (e) {
          audioStatus.textContent = e.status === 409 ? 'no audio kept for this leg (header-only capture or codec)' : 'audio failed: ' + e.message;
          load.disabled = false;
        }
      },
    });
    box.append(el('div', { class: 'leg', 'data-stream': st.stream },
      el('h3', { text: `Leg ${n + 1}: ${st.src} → ${st.dst}` }),
      metrics,
      lineChart('Jitter', rows, [['mean_jitter_ms', 'mean', '#1f5fbf'], ['max_jitter_ms', 'max', '#c53030']], 'ms'),
      lineChart('Loss', rows, [['lost_pct', 'lost', '#b7791f']], '%'),
      el('div', {}, load, ' ', audioStatus), audio));
  });
  return box;
}

// ---- routing -------------------------------------------------------------

async function route() {
  if (!token()) return showLogin();
  let who;
  try {
    who = await getJson('/api/whoami');
  } catch (e) {
    if (e.status !== 401) setMain(el('p', { class: 'error', text: 'The service did not answer: ' + e.message }));
    return;
  }
  window.nqsScope = who;
  document.getElementById('who').textContent = who.scope === 'admin' ? 'admin'
    : who.scope === 'reseller' ? 'reseller: ' + who.domains.join(', ')
      : 'shared call (until ' + fmtTime(who.expires) + ')';
  document.getElementById('logout').hidden = false;
  const m = location.pathname.match(/^\/calls\/(.+)$/);
  if (m) return showCall(decodeURIComponent(m[1]));
  // A share link sees one call: the history is that call.
  if (who.scope === 'share') {
    history.replaceState(null, '', callPath(who.call_id));
    return showCall(who.call_id);
  }
  return showHistory();
}

document.addEventListener('click', (ev) => {
  const a = ev.target.closest && ev.target.closest('a');
  if (!a || a.hasAttribute('download') || a.target || ev.defaultPrevented ||
      ev.ctrlKey || ev.metaKey || ev.shiftKey) return;
  const url = new URL(a.href, location.href);
  if (!/^https?:$/.test(url.protocol) || url.origin !== location.origin ||
      url.pathname.startsWith('/api/') || url.pathname.startsWith('/ui/')) return;
  ev.preventDefault();
  history.pushState(null, '', url.pathname + url.search);
  route();
});

window.addEventListener('popstate', route);

document.addEventListener('DOMContentLoaded', () => {
  document.getElementById('logout').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    history.pushState(null, '', '/');
    showLogin();
  });
  takeTokenFromUrl();
  route();
});
