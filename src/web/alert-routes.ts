/**
 * Alert settings and "send test", on the page (/settings/alerts) and in the API
 * (/api/v1/alerts/settings, /api/v1/alerts/test). The server passes this plugin in with its
 * AlertService (serve/runtime.ts); login is checked by the app's hooks like for every page.
 */
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import { Type, type Static } from '@sinclair/typebox';
import { AlertSettingsError, type AlertService, type ChannelResult } from '../domain/alerts.js';
import { formatDailyTime, type AlertSettings } from '../domain/alert-config.js';
import { alertsPage, type AlertsPageData } from './pages/alerts.js';
import { csrfFor, renderPage } from './pages.js';
import { ErrorBody } from './schemas.js';

const Field = Type.Optional(Type.String({ maxLength: 2000 }));
const AlertSettingsBody = Type.Object({
  smtpHost: Field, smtpPort: Field, smtpSecure: Field, smtpUser: Field, smtpPassword: Field, smtpFrom: Field, smtpTo: Field,
  webhookUrl: Field, dailySummary: Field,
  clearPassword: Type.Optional(Type.Literal('yes')),
}, { additionalProperties: false });
const FormAlertSettings = Type.Object({ ...AlertSettingsBody.properties, _csrf: Type.Optional(Type.String()) });
const FormCsrf = Type.Object({ _csrf: Type.Optional(Type.String()) });

const ChannelResultView = Type.Object({ channel: Type.String(), target: Type.String(), ok: Type.Boolean(), message: Type.String() });
const SettingsView = Type.Object({
  email: Type.Union([Type.Object({ host: Type.String(), port: Type.Integer(), secure: Type.Boolean(), user: Type.Union([Type.String(), Type.Null()]), from: Type.String(), to: Type.Array(Type.String()) }), Type.Null()]),
  webhookUrl: Type.Union([Type.String(), Type.Null()]),
  dailySummary: Type.Union([Type.String(), Type.Null()], { description: 'HH:MM in the server\'s time zone, or null: off' }),
  problems: Type.Array(Type.String()),
});

function settingsView(s: AlertSettings, problems: string[]): Static<typeof SettingsView> {
  return {
    email: s.smtp ? { host: s.smtp.host, port: s.smtp.port, secure: s.smtp.secure, user: s.smtp.user, from: s.smtp.from, to: [...s.smtp.to] } : null,
    webhookUrl: s.webhookUrl,
    dailySummary: s.dailySummary ? formatDailyTime(s.dailySummary) : null,
    problems,
  };
}

export function alertRoutes(alerts: AlertService): FastifyPluginAsync {
  return async (app) => {
    const hide = { hide: true };
    const security: Array<Record<string, string[]>> = [{ bearer: [] }, { session: [] }];

    const show = (req: FastifyRequest, reply: FastifyReply, extra: Partial<AlertsPageData>, status = 200): FastifyReply => {
      const { settings, problems } = alerts.effective();
      const body = alertsPage({ effective: settings, problems, page: alerts.pageSettings(), file: alerts.fileSettings, csrf: csrfFor(req, reply), ...extra });
      // The forms post to their own URLs; the address bar keeps the page's, so a reload shows the page.
      return reply.code(status).type('text/html; charset=utf-8').header('Cache-Control', 'no-store').header('HX-Push-Url', '/settings/alerts')
        .send(renderPage(req, reply, { title: 'Alerts', section: 'settings', body }));
    };

    app.get('/settings/alerts', { schema: hide }, async (req, reply) => show(req, reply, {}));

    app.post<{ Body: Static<typeof FormAlertSettings> }>('/settings/alerts', { schema: { ...hide, body: FormAlertSettings } }, async (req, reply) => {
      const { _csrf: _ignored, ...values } = req.body;
      try {
        await alerts.savePageSettings(values);
      } catch (err) {
        if (err instanceof AlertSettingsError) return show(req, reply, { error: err.message }, 400);
        throw err;
      }
      return show(req, reply, { saved: true });
    });

    app.post<{ Body: Static<typeof FormCsrf> }>('/settings/alerts/test', { schema: { ...hide, body: FormCsrf } }, async (req, reply) => {
      const testResults: ChannelResult[] = await alerts.sendTest();
      return show(req, reply, { testResults });
    });

    app.get('/api/v1/alerts/settings', {
      schema: { tags: ['alerts'], summary: 'The alert settings in force (settings page over config file); the SMTP password is never shown', security, response: { 200: SettingsView, 401: ErrorBody } },
    }, async () => {
      const { settings, problems } = alerts.effective();
      return settingsView(settings, problems);
    });

    app.put<{ Body: Static<typeof AlertSettingsBody> }>('/api/v1/alerts/settings', {
      schema: {
        tags: ['alerts'],
        summary: 'Replace the settings page\'s alert values: each overrides the config file\'s; a missing or empty one uses the file\'s (the stored SMTP password stays unless clearPassword is "yes"); "off" turns that channel off',
        security, body: AlertSettingsBody, response: { 200: SettingsView, 400: ErrorBody, 401: ErrorBody },
      },
    }, async (req, reply) => {
      try {
        await alerts.savePageSettings(req.body);
      } catch (err) {
        if (err instanceof AlertSettingsError) return reply.code(400).send({ statusCode: 400, error: 'Bad Request', message: err.message });
        throw err;
      }
      const { settings, problems } = alerts.effective();
      return settingsView(settings, problems);
    });

    app.post('/api/v1/alerts/test', {
      schema: { tags: ['alerts'], summary: 'Send a test message through every channel in force; one result per channel', security, response: { 200: Type.Array(ChannelResultView), 401: ErrorBody } },
    }, async () => alerts.sendTest());
  };
}
