/** The hosts list's search and filters, and the CSV exports of inventory and task history. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import request from 'supertest';
import { login, makeHarness, type Harness } from './helpers.js';
import type { HardwareReport } from '../../src/domain/database.js';
import { csvCell, csvDocument } from '../../src/web/csv.js';
import { wantsCsv } from '../../src/web/export-routes.js';
import { TEST_OPERATOR } from '../lib/actor.js';

let h: Harness;
let agent: Awaited<ReturnType<typeof login>>['agent'];

const DELL = '52:54:00:10:00:01';
const HP = '52:54:00:10:00:02';
const BARE = '52:54:00:10:00:03';

function hardware(vendor: string, model: string, serial: string): HardwareReport {
  return {
    dmi: { vendor, model, serial, uuid: '' },
    disks: [{ name: 'nvme0n1', size: 256_060_514_304, model: 'Samsung SSD 980, "Pro"', serial: 'S4EWNX0R', logicalSectorSize: 512, physicalSectorSize: 512, rotational: false, removable: false, transport: 'nvme' }],
    nics: [{ name: 'eth0', mac: DELL, driver: 'e1000e', speed: '1000Mb/s' }],
    reportedAt: '2026-12-01T10:00:00.000Z',
  };
}

/** Parses the CSV the way a spreadsheet does (quotes, doubled quotes, CRLF), to check the encoding round-trips. */
function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let cell = '';
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') { cell += '"'; i++; } else if (c === '"') quoted = false; else cell += c;
    } else if (c === '"') quoted = true;
    else if (c === ',') { row.push(cell); cell = ''; } else if (c === '\r' && text[i + 1] === '\n') { row.push(cell); rows.push(row); row = []; cell = ''; i++; } else cell += c;
  }
  if (cell !== '' || row.length > 0) throw new Error('CSV does not end with CRLF');
  return rows;
}

beforeAll(async () => {
  h = await makeHarness({ images: ['win11'] });
  ({ agent } = await login(h.app));
  await h.ctx.commands.addHost(TEST_OPERATOR, DELL, 'Reception 2');
  await h.ctx.commands.addHost(TEST_OPERATOR, HP, 'Front desk');
  await h.ctx.commands.addHost(TEST_OPERATOR, BARE, '-Lab corner');
  await h.ctx.hosts.setHardware(DELL, hardware('Dell Inc.', 'OptiPlex 7010', 'SN-DELL-1'));
  await h.ctx.hosts.setHardware(HP, hardware('=HYPERLINK("http://evil.example","x")', 'EliteDesk 800', '+SN-HP-2'));
  await h.ctx.commands.startTask(TEST_OPERATOR, { kind: 'deploy', mac: HP, image: 'win11' });
});
afterAll(async () => {
  await h.close();
});

const rowsOf = (text: string): string[] => [...text.matchAll(/<tr data-mac="([^"]+)"/g)].map((m) => m[1]);

describe('hosts list search and filters', () => {
  it('lists every PC without a filter, with the filter form and export links', async () => {
    const page = await agent.get('/hosts').expect(200);
    expect(rowsOf(page.text).sort()).toEqual([DELL, HP, BARE]);
    expect(page.text).toContain('<form method="get" action="/hosts"');
    expect(page.text).toContain('href="/api/v1/hosts.csv"');
    expect(page.text).toContain('href="/api/v1/tasks.csv"');
    expect(page.text).toContain('<option value="Dell Inc. OptiPlex 7010">');
    // A PC's DMI strings are escaped in the drop-down like anywhere else.
    expect(page.text).toContain('<option value="=HYPERLINK(&quot;http://evil.example&quot;,&quot;x&quot;) EliteDesk 800">');
  });

  it('finds PCs by part of the name, the MAC in any notation, the model and the serial', async () => {
    expect(rowsOf((await agent.get('/hosts?q=recept').expect(200)).text)).toEqual([DELL]);
    expect(rowsOf((await agent.get('/hosts').query({ q: '52-54-00-10-00-03' }).expect(200)).text)).toEqual([BARE]);
    expect(rowsOf((await agent.get('/hosts?q=5254001000').expect(200)).text).sort()).toEqual([DELL, HP, BARE]);
    expect(rowsOf((await agent.get('/hosts?q=elitedesk').expect(200)).text)).toEqual([HP]);
    expect(rowsOf((await agent.get('/hosts?q=front').expect(200)).text)).toEqual([HP]);
    expect(rowsOf((await agent.get('/hosts?q=SN-DELL').expect(200)).text)).toEqual([DELL]);
  });

  it('filters by model and by state, and says how many match', async () => {
    const byModel = await agent.get('/hosts').query({ model: 'Dell Inc. OptiPlex 7010' }).expect(200);
    expect(rowsOf(byModel.text)).toEqual([DELL]);
    expect(byModel.text).toContain('1 of 3 PCs match.');
    // The export link carries the filter, and so does the table's polling.
    expect(byModel.text).toContain('href="/api/v1/hosts.csv?model=Dell+Inc.+OptiPlex+7010"');
    expect(byModel.text).toContain('hx-get="/hosts/table?model=Dell+Inc.+OptiPlex+7010"');
    expect(rowsOf((await agent.get('/hosts?state=task+pending').expect(200)).text)).toEqual([HP]);
    expect(rowsOf((await agent.get('/hosts?state=idle').expect(200)).text).sort()).toEqual([DELL, BARE]);
    // The polled table keeps the filter.
    expect(rowsOf((await agent.get('/hosts/table?state=task+pending').expect(200)).text)).toEqual([HP]);
  });

  it('filters by group', async () => {
    await h.ctx.commands.setHostGroup(TEST_OPERATOR, BARE, 'Lab 2');
    const page = await agent.get('/hosts?group=Lab+2').expect(200);
    expect(rowsOf(page.text)).toEqual([BARE]);
    expect(page.text).toContain('<option value="Lab 2" selected>');
    expect(rowsOf((await agent.get('/hosts?q=lab+2').expect(200)).text)).toEqual([BARE]);
    expect(rowsOf((await agent.get('/hosts?group=lab+2').expect(200)).text)).toEqual([BARE]);
  });

  it('says so when nothing matches, and ignores an unknown state', async () => {
    const none = await agent.get('/hosts?q=nothing-like-this').expect(200);
    expect(rowsOf(none.text)).toEqual([]);
    expect(none.text).toContain('No PC matches this search.');
    expect(rowsOf((await agent.get('/hosts?state=bogus').expect(200)).text)).toHaveLength(3);
  });
});

describe('CSV export', () => {
  it('quotes commas, quotes and line breaks, and turns formula-like text into text', () => {
    expect(csvCell('plain')).toBe('plain');
    expect(csvCell('a,b')).toBe('"a,b"');
    expect(csvCell('say "hi"')).toBe('"say ""hi"""');
    expect(csvCell('two\nlines')).toBe('"two\nlines"');
    for (const lead of ['=', '+', '-', '@', '\t', '\r']) expect(csvCell(`${lead}1+1`).startsWith(lead === '\r' ? `"'` : `'${lead}`)).toBe(true);
    expect(csvCell('=A1,B1')).toBe(`"'=A1,B1"`);
    expect(csvCell(-5)).toBe('-5');
    expect(csvCell(null)).toBe('');
    expect(csvCell(true)).toBe('yes');
    expect(csvDocument(['a', 'b'], [[1, 'x']])).toBe('a,b\r\n1,x\r\n');
  });

  it('exports the inventory with hardware, guarded against formulas, filtered like the list', async () => {
    const res = await agent.get('/api/v1/hosts.csv').expect(200);
    expect(res.headers['content-type']).toBe('text/csv; charset=utf-8');
    expect(res.headers['content-disposition']).toMatch(/^attachment; filename="netclone-hosts-\d{4}-\d{2}-\d{2}\.csv"$/);
    const rows = parseCsv(res.text);
    const header = rows[0];
    expect(header.slice(0, 8)).toEqual(['name', 'mac', 'ip', 'registered', 'group', 'state', 'vendor', 'model']);
    expect(rows).toHaveLength(4);
    const byMac = new Map(rows.slice(1).map((r) => [r[1], Object.fromEntries(header.map((k, i) => [k, r[i]]))]));
    expect(byMac.get(DELL)).toMatchObject({ name: 'Reception 2', vendor: 'Dell Inc.', model: 'OptiPlex 7010', serial: 'SN-DELL-1', state: 'idle', registered: 'yes' });
    expect(byMac.get(DELL)?.disks).toBe('nvme0n1 256060514304 bytes Samsung SSD 980, "Pro" serial S4EWNX0R nvme');
    expect(byMac.get(DELL)?.nics).toBe(`eth0 ${DELL} e1000e 1000Mb/s`);
    expect(byMac.get(HP)).toMatchObject({ name: 'Front desk', vendor: `'=HYPERLINK("http://evil.example","x")`, serial: "'+SN-HP-2", state: 'task pending' });
    expect(byMac.get(BARE)).toMatchObject({ name: "'-Lab corner", group: 'Lab 2', vendor: '', disks: '' });
    const filtered = parseCsv((await agent.get('/api/v1/hosts.csv?q=optiplex').expect(200)).text);
    expect(filtered.map((r) => r[1])).toEqual(['mac', DELL]);
  });

  it('exports the task history with the host name, linked from the tasks page', async () => {
    expect((await agent.get('/tasks').expect(200)).text).toContain('<a class="right" href="/api/v1/tasks.csv" download>Export as CSV</a>');
    const rows = parseCsv((await agent.get('/api/v1/tasks.csv').expect(200)).text);
    expect(rows[0].slice(0, 7)).toEqual(['id', 'created', 'kind', 'image', 'mac', 'host', 'state']);
    expect(rows).toHaveLength(2);
    expect(rows[1].slice(2, 7)).toEqual(['deploy', 'win11', HP, 'Front desk', 'queued']);
    expect(parseCsv((await agent.get(`/api/v1/tasks.csv?mac=${DELL}`).expect(200)).text)).toHaveLength(1);
  });

  it('answers the JSON routes with CSV when the caller asks for it', async () => {
    const csv = await agent.get('/api/v1/hosts').set('Accept', 'text/csv').expect(200);
    expect(csv.headers['content-type']).toBe('text/csv; charset=utf-8');
    expect(parseCsv(csv.text)).toHaveLength(4);
    const tasks = await agent.get('/api/v1/tasks').set('Accept', 'text/csv, application/json;q=0.5').expect(200);
    expect(parseCsv(tasks.text)[0][0]).toBe('id');
    const json = await agent.get('/api/v1/hosts').set('Accept', 'application/json, text/csv;q=0.1').expect(200);
    expect(json.headers['content-type']).toMatch(/^application\/json/);
    expect(wantsCsv('*/*')).toBe(false);
    expect(wantsCsv(undefined)).toBe(false);
  });

  it('needs a login or a token like the rest of the API', async () => {
    await request(h.app.server).get('/api/v1/hosts.csv').expect(401);
    await request(h.app.server).get('/api/v1/tasks.csv').expect(401);
    await request(h.app.server).get('/api/v1/hosts').set('Accept', 'text/csv').expect(401);
    const { token } = await h.ctx.commands.createApiToken(TEST_OPERATOR, 'export-script');
    const res = await request(h.app.server).get('/api/v1/hosts.csv').set('Authorization', `Bearer ${token}`).expect(200);
    expect(parseCsv(res.text)).toHaveLength(4);
  });
});
