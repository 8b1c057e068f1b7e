/** The alert settings page: what is in force, the form that overrides the config file, and "send test". */
import { formatDailyTime, type AlertFileSettings, type AlertPageSettings, type AlertSettings } from '../../domain/alert-config.js';
import type { ChannelResult } from '../../domain/alerts.js';
import { html, type SafeHtml } from '../html.js';
import { csrfField } from './layout.js';

export interface AlertsPageData {
  readonly effective: AlertSettings;
  readonly problems: readonly string[];
  readonly page: AlertPageSettings;
  readonly file: AlertFileSettings;
  readonly csrf: string;
  /** Why the last save was refused. */
  readonly error?: string | null;
  readonly saved?: boolean;
  /** The outcome of "send test", one line per channel. */
  readonly testResults?: readonly ChannelResult[] | null;
}

function inForce(s: AlertSettings): SafeHtml {
  const smtp = s.smtp;
  return html`<ul class="alert-channels">
<li><strong>Email:</strong> ${smtp ? html`on — ${smtp.host}:${smtp.port}${smtp.secure ? ' (TLS)' : ''} from ${smtp.from} to ${smtp.to.join(', ')}${smtp.user ? html`, login ${smtp.user}` : ''}` : 'off'}</li>
<li><strong>Webhook:</strong> ${s.webhookUrl ? html`on — POST to <code>${s.webhookUrl}</code>` : 'off'}</li>
<li><strong>Daily summary:</strong> ${s.dailySummary ? `at ${formatDailyTime(s.dailySummary)} (server time)` : 'off'}</li>
</ul>`;
}

function fileValue(v: string | number | boolean | readonly string[] | null): string {
  if (v === null) return 'not set in the config file';
  if (typeof v === 'boolean') return `config file: ${v ? 'yes' : 'no'}`;
  return `config file: ${Array.isArray(v) ? v.join(', ') : String(v)}`;
}

function field(label: string, name: keyof AlertPageSettings, value: string | undefined, placeholder: string, type = 'text'): SafeHtml {
  return html`<label>${label} <input name="${name}" type="${type}" value="${type === 'password' ? '' : (value ?? '')}" placeholder="${placeholder}" autocomplete="off"></label>`;
}

function results(list: readonly ChannelResult[]): SafeHtml {
  if (list.length === 0) return html`<p class="error" id="test-results">No alert channel is set up: set an SMTP server or a webhook URL first.</p>`;
  return html`<ul id="test-results">${list.map((r) => html`<li class="${r.ok ? 'test-ok' : 'error-text'}"><strong>${r.channel}</strong> (${r.target}): ${r.ok ? 'sent' : html`failed — ${r.message}`}</li>`)}</ul>`;
}

export function alertsPage(d: AlertsPageData): SafeHtml {
  const f = d.file;
  const daily = f.dailySummary === null ? null : f.dailySummary === 'off' ? 'off' : formatDailyTime(f.dailySummary);
  return html`<h1>Alerts</h1>
<section class="card" id="alerts-in-force"><h2>In force</h2>${inForce(d.effective)}
${d.problems.map((p) => html`<p class="error">${p}</p>`)}
<p class="hint">Alerts are sent when a task fails, when a scheduled backup is missed, once when a PC becomes overdue, and as the daily summary.</p></section>
${d.error ? html`<p class="error" role="alert">Not saved: ${d.error}</p>` : ''}${d.saved ? html`<p class="notice" role="status">Alert settings saved.</p>` : ''}
<form method="post" action="/settings/alerts" class="card row-form" id="alert-settings">${csrfField(d.csrf)}
<h2>Settings</h2>
<p class="hint">A value here overrides the config file's <code>alerts.*</code> value for that field; leave a field empty to use the file's value. "off" in SMTP server, Webhook URL or Daily summary turns that off whatever the file says.</p>
${field('SMTP server', 'smtpHost', d.page.smtpHost, fileValue(f.smtpHost))}
${field('SMTP port', 'smtpPort', d.page.smtpPort, fileValue(f.smtpPort))}
${field('TLS from the start (yes/no; no: STARTTLS when offered)', 'smtpSecure', d.page.smtpSecure, fileValue(f.smtpSecure))}
${field('SMTP user', 'smtpUser', d.page.smtpUser, fileValue(f.smtpUser))}
${field('SMTP password', 'smtpPassword', undefined, d.page.smtpPassword !== undefined ? 'set on this page (empty: keep it)' : f.smtpPasswordFile ? `config file: from ${f.smtpPasswordFile}` : 'not set', 'password')}
${field('From', 'smtpFrom', d.page.smtpFrom, fileValue(f.smtpFrom))}
${field('To (commas between addresses)', 'smtpTo', d.page.smtpTo, fileValue(f.smtpTo))}
${field('Webhook URL', 'webhookUrl', d.page.webhookUrl, fileValue(f.webhookUrl))}
${field('Daily summary (HH:MM or off)', 'dailySummary', d.page.dailySummary, fileValue(daily))}
${d.page.smtpPassword !== undefined ? html`<label class="check"><input type="checkbox" name="clearPassword" value="yes"> Forget the password set on this page</label>` : ''}
<button>Save</button>
</form>
<form method="post" action="/settings/alerts/test" class="card row-form" id="alert-test">${csrfField(d.csrf)}
<h2>Send test</h2>
<p class="hint">Sends a test message through every channel in force and shows what each answered.</p>
<button>Send test message</button>
${d.testResults ? results(d.testResults) : ''}
</form>`;
}
