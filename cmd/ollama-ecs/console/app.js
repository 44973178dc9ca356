'use strict';
// The ollama-ecs console: the deployments page and an execution's graph, drawn from the state machine's own ASL,
// updated by server-sent events. No framework, nothing fetched from elsewhere.

const token = document.querySelector('meta[name="console-token"]').content;
const view = document.getElementById('view');
const live = document.getElementById('live');
let source = null;
let definition = null;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v; else if (k.startsWith('on')) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c.nodeType ? c : String(c));
  return e;
}

function svg(tag, attrs, ...children) {
  const e = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const c of children) e.append(c.nodeType ? c : document.createTextNode(String(c)));
  return e;
}

async function post(path, body) {
  const r = await fetch(path, {method: 'POST', headers: {'Content-Type': 'application/json', 'X-Console-Token': token}, body: JSON.stringify(body)});
  const out = await r.json();
  if (!r.ok) throw new Error(out.error || r.statusText);
  return out;
}

function stream(url, onData) {
  if (source) source.close();
  source = new EventSource(url);
  source.onopen = () => { live.textContent = 'live'; };
  source.onerror = () => { live.textContent = 'reconnecting…'; };
  source.onmessage = (m) => onData(JSON.parse(m.data));
}

function duration(s) {
  if (!s) return '-';
  const h = Math.floor(s / 3600), m = Math.floor(s % 3600 / 60), sec = Math.floor(s % 60);
  return h ? `${h}h${String(m).padStart(2, '0')}m` : `${m}m${String(sec).padStart(2, '0')}s`;
}

function countdown(at) {
  if (!at || at.startsWith('0001')) return '-';
  const left = (new Date(at) - Date.now()) / 1000;
  return left > 0 ? `in ${duration(left)}` : 'due';
}

// --- deployments page ---

function deploymentsPage() {
  const msg = el('div', {id: 'deploy-result'});
  const form = el('form', {class: 'deploy', id: 'deploy-form'},
    el('label', {}, 'model', el('input', {name: 'model', required: '', placeholder: 'llama3.2:3b'})),
    el('label', {}, 'env', (() => { const s = el('select', {name: 'env'}, el('option', {}, 'dev'), el('option', {}, 'prod')); return s; })()),
    el('label', {}, 'source (uploaded GGUF)', el('input', {name: 'source', placeholder: 's3://bucket/models/x.gguf', size: 36})),
    el('label', {}, 'ttl', el('input', {name: 'ttl', placeholder: '2h', size: 6})),
    el('label', {}, 'id', el('input', {name: 'deploymentId', placeholder: '(from the model)', size: 14})),
    el('button', {type: 'submit', id: 'deploy-button'}, 'Deploy'));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const f = new FormData(form);
    const req = {};
    for (const [k, v] of f.entries()) if (v) req[k] = v;
    msg.className = ''; msg.textContent = 'starting…';
    try {
      const out = await post('/api/deploy', req);
      msg.className = 'ok';
      msg.replaceChildren('started ', el('a', {href: '#/execution/' + encodeURIComponent(out.executionArn), id: 'started-link'}, out.executionArn));
    } catch (e) {
      msg.className = 'error'; msg.textContent = e.message;
    }
  });
  const deployments = el('tbody', {id: 'deployments'});
  const executions = el('tbody', {id: 'executions'});
  view.replaceChildren(
    el('h2', {}, 'Deploy'), form, msg,
    el('h2', {}, 'Deployments'),
    el('table', {}, el('thead', {}, el('tr', {}, ...['id', 'model', 'env', 'placement', 'status', 'endpoint', 'uptime', '$/h', 'cost so far',
      'requests', 'last use', 'auto-stop', ''].map((h) => el('th', {}, h)))), deployments),
    el('h2', {}, 'Executions'),
    el('table', {}, el('thead', {}, el('tr', {}, ...['execution', 'deployment', 'status', 'started'].map((h) => el('th', {}, h)))), executions));
  stream('/api/stream', (data) => {
    if (data.streamError) { live.textContent = data.streamError; return; }
    deployments.replaceChildren(...(data.deployments || []).map((d) => el('tr', {'data-id': d.deploymentId},
      el('td', {}, d.deploymentId), el('td', {}, d.model), el('td', {}, d.env),
      el('td', {}, d.placement + (d.instanceType ? ` (${d.instanceType})` : '')), el('td', {class: 'status'}, d.status),
      el('td', {}, d.endpoint || '-'), el('td', {}, duration(d.uptimeSeconds)), el('td', {}, (d.hourlyCostUSD || 0).toFixed(4)),
      el('td', {}, '$' + (d.costSoFarUSD || 0).toFixed(2)), el('td', {}, d.requests ?? '-'),
      el('td', {}, d.lastUse ? new Date(d.lastUse).toLocaleTimeString() : '-'), el('td', {}, countdown(d.autoStopAt)),
      el('td', {}, d.taskArn ? el('button', {class: 'stop', onclick: async (ev) => {
        ev.target.disabled = true;
        try { await post('/api/stop', {deploymentId: d.deploymentId}); } catch (e) { alert(e.message); }
      }}, 'Stop') : ''))));
    executions.replaceChildren(...(data.executions || []).map((x) => el('tr', {},
      el('td', {}, el('a', {href: '#/execution/' + encodeURIComponent(x.executionArn)}, x.name)), el('td', {}, x.deploymentId || ''),
      el('td', {class: 'status-' + x.status}, x.status), el('td', {}, new Date(x.startDate).toLocaleTimeString()))));
  });
}

// --- execution page: the graph of the ASL, the path this execution took ---

function edges(states) {
  const out = [];
  for (const [name, s] of Object.entries(states)) {
    const add = (to, label) => { if (to && states[to]) out.push({from: name, to, label}); };
    add(s.Next, '');
    add(s.Default, 'default');
    for (const c of s.Choices || []) add(c.Next, '');
    for (const c of s.Catch || []) add(c.Next, (c.ErrorEquals || []).join(','));
  }
  return out;
}

function layout(asl) {
  const es = edges(asl.States);
  const rank = {[asl.StartAt]: 0};
  const order = [asl.StartAt];
  for (let i = 0; i < order.length; i++) {
    for (const e of es.filter((x) => x.from === order[i])) {
      if (!(e.to in rank)) { rank[e.to] = rank[order[i]] + 1; order.push(e.to); }
    }
  }
  for (const name of Object.keys(asl.States)) if (!(name in rank)) { rank[name] = 0; order.push(name); }
  const perRank = {};
  const pos = {};
  const w = 170, h = 32, gx = 16, gy = 26;
  for (const name of order) {
    const r = rank[name];
    const i = perRank[r] = (perRank[r] ?? -1) + 1;
    pos[name] = {x: 10 + i * (w + gx), y: 10 + r * (h + gy), w, h};
  }
  const width = 20 + Math.max(...Object.values(perRank).map((n) => (n + 1) * (w + gx)));
  const height = 20 + (Math.max(...Object.values(rank)) + 1) * (h + gy);
  return {pos, es, width, height};
}

function executionPage(arn) {
  const title = el('h2', {id: 'execution-title'}, arn);
  const holder = el('div', {class: 'graph'});
  const details = el('div', {id: 'details'}, 'Click a state to see its input, output and error.');
  view.replaceChildren(el('p', {}, el('a', {href: '#/'}, '← deployments')), title, holder);
  let selected = null;
  let last = null;
  const render = () => {
    if (!definition || !last) return;
    const x = last;
    title.replaceChildren(`${x.name} `, el('span', {class: 'status-' + x.status, id: 'execution-status'}, x.status),
      x.error ? el('span', {class: 'error'}, `  ${x.error}`) : '');
    const {pos, es, width, height} = layout(definition);
    const runs = x.states || [];
    const byName = {};
    for (const r of runs) (byName[r.name] = byName[r.name] || []).push(r);
    const taken = new Set();
    for (let i = 0; i + 1 < runs.length; i++) taken.add(runs[i].name + '\u0000' + runs[i + 1].name);
    const g = svg('svg', {width, height, id: 'graph'},
      svg('defs', {}, svg('marker', {id: 'arrow', viewBox: '0 0 10 10', refX: 10, refY: 5, markerWidth: 6, markerHeight: 6, orient: 'auto'},
        svg('path', {d: 'M0,0 L10,5 L0,10 z', fill: '#8a94a3'}))));
    for (const e of es) {
      const a = pos[e.from], b = pos[e.to];
      const cls = taken.has(e.from + '\u0000' + e.to) ? 'edge taken' : 'edge';
      g.append(svg('line', {class: cls, x1: a.x + a.w / 2, y1: a.y + a.h, x2: b.x + b.w / 2, y2: b.y}));
    }
    for (const [name, p] of Object.entries(pos)) {
      const rs = byName[name] || [];
      const lastRun = rs[rs.length - 1];
      let cls = 'node';
      const endedHere = runs.length && runs[runs.length - 1] === lastRun && ['FAILED', 'TIMED_OUT', 'ABORTED'].includes(x.status);
      if (lastRun) {
        if (lastRun.status === 'Failed' || endedHere) cls += ' failed';
        else if (lastRun.status === 'Caught') cls += ' caught';
        else if (lastRun.status === 'Running' && x.status === 'RUNNING') cls += ' current';
        else cls += ' visited';
      }
      if (name === selected) cls += ' selected';
      const retries = rs.reduce((n, r) => n + (r.retries || 0), 0);
      const node = svg('g', {class: cls, 'data-state': name},
        svg('rect', {x: p.x, y: p.y, width: p.w, height: p.h}),
        svg('text', {x: p.x + p.w / 2, y: p.y + p.h / 2}, name + (rs.length > 1 ? ` ×${rs.length}` : '')));
      if (retries) node.append(svg('text', {class: 'retries', x: p.x + p.w - 4, y: p.y + 9, 'text-anchor': 'end'}, `${retries} retr.`));
      node.addEventListener('click', () => { selected = name; render(); });
      g.append(node);
    }
    const events = x.events || [];
    if (selected) {
      const entered = events.filter((e) => e.stateName === selected && e.type.endsWith('StateEntered')).pop();
      const exited = events.filter((e) => e.stateName === selected && e.type.endsWith('StateExited')).pop();
      const failed = (byName[selected] || []).filter((r) => r.error).pop();
      details.replaceChildren(el('h3', {id: 'details-name'}, selected),
        el('div', {}, 'Input'), el('pre', {id: 'details-input'}, entered ? JSON.stringify(entered.input, null, 2) : '-'),
        el('div', {}, 'Output'), el('pre', {id: 'details-output'}, exited && exited.output ? JSON.stringify(exited.output, null, 2) : '-'),
        el('div', {}, 'Error'), el('pre', {class: 'error', id: 'details-error'}, failed ? `${failed.error}: ${failed.cause}` : '-'));
    }
    holder.replaceChildren(g, details);
  };
  fetch('/api/definition').then((r) => r.json()).then((d) => { definition = d; render(); });
  stream('/api/stream?arn=' + encodeURIComponent(arn), (data) => {
    if (data.streamError) { title.replaceChildren(el('span', {class: 'error'}, data.streamError)); return; }
    last = data; render();
  });
}

function route() {
  const h = location.hash;
  if (h.startsWith('#/execution/')) executionPage(decodeURIComponent(h.slice('#/execution/'.length)));
  else deploymentsPage();
}
window.addEventListener('hashchange', route);
route();
