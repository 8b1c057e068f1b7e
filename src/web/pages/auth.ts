import type { ApiTokenRecord } from '../../domain/database.js';
import { formatAgo, formatTime } from '../format.js';
import { html, type SafeHtml } from '../html.js';
import { csrfField, emptyState } from './layout.js';

export function loginForm(csrf: string, error: string | null, next: string, needsSetup: boolean): SafeHtml {
  // The page's own URL as the action: a refused login is answered at it, so the address bar and a reload stay there.
  return html`<form method="post" action="/login${next !== '/' ? `?next=${encodeURIComponent(next)}` : ''}" class="card narrow" hx-boost="false">
<h1>Log in</h1>
${error ? html`<p class="error" role="alert">${error}</p>` : ''}
${needsSetup ? html`<p class="notice">No admin password is set yet. Open the setup link from the server log (it contains <code>/setup?token=</code>), or run <code>netclone admin passwd</code> on the server.</p>` : ''}
${csrfField(csrf)}
<input type="hidden" name="next" value="${next}">
<label>Username <input name="username" value="admin" autocomplete="username" required></label>
<label>Password <input type="password" name="password" autocomplete="current-password" required autofocus></label>
<button>Log in</button>
</form>`;
}

export function setupForm(csrf: string, token: string, error: string | null): SafeHtml {
  // With the token in the action, a refused password is answered at /setup?token=…, which a reload shows again.
  return html`<form method="post" action="/setup?token=${encodeURIComponent(token)}" class="card narrow" hx-boost="false">
<h1>Set the admin password</h1>
<p>This appliance has no admin password yet. Choose one (at least 8 characters); you log in as <strong>admin</strong>.</p>
${error ? html`<p class="error" role="alert">${error}</p>` : ''}
${csrfField(csrf)}
<input type="hidden" name="token" value="${token}">
<label>Password <input type="password" name="password" autocomplete="new-password" minlength="8" required autofocus></label>
<label>Repeat password <input type="password" name="confirm" autocomplete="new-password" minlength="8" required></label>
<button>Set password</button>
</form>`;
}

export function setupInvalid(): SafeHtml {
  return html`<section class="card narrow"><h1>Setup link not valid</h1>
<p>This setup link is wrong or was used already. If an admin password exists, <a href="/login">log in</a>.
Otherwise restart netclone to get a fresh link in its log, or run <code>netclone admin passwd</code> on the server.</p></section>`;
}

export function settingsPage(tokens: readonly ApiTokenRecord[], csrf: string, newToken: { name: string; token: string } | null): SafeHtml {
  return html`<h1>Settings</h1>
<section class="card" id="alerts-link"><h2>Alerts</h2><p>Email and webhook alerts on failed tasks, missed and overdue backups, and the daily summary: <a href="/settings/alerts">alert settings</a>.</p></section>
<section class="card"><h2>API tokens</h2>
<p class="hint">Scripts send <code>Authorization: Bearer &lt;token&gt;</code> to <code>/api/v1/…</code>. The API is described at <a href="/docs" hx-boost="false">/docs</a>.</p>
${newToken ? html`<div class="notice"><p>New token <strong>${newToken.name}</strong> — copy it now, it is not shown again:</p><p><code class="url" id="new-token">${newToken.token}</code></p></div>` : ''}
${tokens.length === 0 ? emptyState('No API tokens.') : html`<div class="table-wrap"><table><thead><tr><th>Name</th><th>Created</th><th>Last used</th><th></th></tr></thead><tbody>
${tokens.map((t) => html`<tr><td>${t.name}</td><td>${formatTime(t.createdAt)}</td><td>${formatAgo(t.lastUsed)}</td>
<td><form method="post" action="/settings/tokens/${t.id}/revoke" class="inline" hx-confirm="Revoke token ${t.name}? Scripts using it stop working.">${csrfField(csrf)}<button class="danger small">Revoke</button></form></td></tr>`)}
</tbody></table></div>`}
<form method="post" action="/settings/tokens" class="row-form">${csrfField(csrf)}
<label>Name <input name="name" required maxlength="64" placeholder="e.g. backup-script"></label><button>Create token</button></form>
</section>
<form method="post" action="/settings/password" class="card row-form">${csrfField(csrf)}
<h2>Admin password</h2>
<label>Current password <input type="password" name="current" autocomplete="current-password" required></label>
<label>New password <input type="password" name="password" autocomplete="new-password" minlength="8" required></label>
<button>Change password</button>
<p class="hint">Changing it logs out every other session.</p>
</form>`;
}
