import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, parseConfigText, resolveConfig } from '../../src/domain/config.js';
import { ALERT_CONFIG_KEYS, AlertSettingsError, checkPageSettings, mergeAlertSettings, NO_FILE_ALERTS } from '../../src/domain/alert-config.js';

const FILE = `
alerts.smtp.host = mail.office.example
alerts.smtp.user = netclone
alerts.smtp.password-file = /etc/netclone/smtp-password
alerts.smtp.from = netclone@office.example
alerts.smtp.to = it@office.example, boss@office.example
alerts.webhook.url = https://hooks.office.example/netclone
alerts.daily-summary = 07:30
`;

describe('alert settings', () => {
  it('are off by default', () => {
    expect(resolveConfig({}).alerts).toEqual(NO_FILE_ALERTS);
    expect(mergeAlertSettings(NO_FILE_ALERTS, {}).settings).toEqual({ smtp: null, webhookUrl: null, dailySummary: null });
  });

  it('are read from the config file, with port 587 (STARTTLS) unless TLS from the start says 465', () => {
    const file = resolveConfig(parseConfigText(FILE)).alerts;
    expect(mergeAlertSettings(file, {}).settings).toEqual({
      smtp: {
        host: 'mail.office.example', port: 587, secure: false, user: 'netclone', password: { file: '/etc/netclone/smtp-password' },
        from: 'netclone@office.example', to: ['it@office.example', 'boss@office.example'],
      },
      webhookUrl: 'https://hooks.office.example/netclone',
      dailySummary: { hour: 7, minute: 30 },
    });
    expect(mergeAlertSettings(resolveConfig(parseConfigText(`${FILE}\nalerts.smtp.secure = yes`)).alerts, {}).settings.smtp?.port).toBe(465);
  });

  it('refuse a bad value naming the key, and email without a recipient', () => {
    expect(() => resolveConfig({ 'alerts.daily-summary': '25:00' })).toThrow(ConfigError);
    expect(() => resolveConfig({ 'alerts.daily-summary': '25:00' })).toThrow(/alerts.daily-summary: "25:00" must be a time of day HH:MM/);
    expect(() => resolveConfig({ 'alerts.webhook.url': 'ftp://x/y' })).toThrow(/alerts.webhook.url: .* must be an http:\/\/ or https:\/\/ URL/);
    expect(() => resolveConfig({ 'alerts.smtp.to': 'it at office' })).toThrow(/alerts.smtp.to: "it at office" is not an email address/);
    expect(() => resolveConfig({ 'alerts.smtp.host': 'mail.office.example', 'alerts.smtp.from': 'a@b.c' })).toThrow(/need a sender and at least one recipient/);
    expect(() => parseConfigText('alerts.smtp.hots = x')).toThrow(/unknown option "alerts.smtp.hots"/);
  });

  it('take the page\'s value over the file\'s field by field; an empty page field keeps the file\'s, "off" turns a channel off', () => {
    const file = resolveConfig(parseConfigText(FILE)).alerts;
    const page = checkPageSettings({ smtpHost: 'relay.example', smtpTo: 'desk@office.example', smtpPassword: 'pw', webhookUrl: 'off', dailySummary: '', smtpFrom: '  ' });
    expect(page).toEqual({ smtpHost: 'relay.example', smtpTo: 'desk@office.example', smtpPassword: 'pw', webhookUrl: 'off' });
    const { settings } = mergeAlertSettings(file, page);
    expect(settings.smtp).toMatchObject({ host: 'relay.example', from: 'netclone@office.example', to: ['desk@office.example'], user: 'netclone', password: { value: 'pw' } });
    expect(settings.webhookUrl).toBeNull();
    expect(settings.dailySummary).toEqual({ hour: 7, minute: 30 });
    expect(mergeAlertSettings(file, { smtpHost: 'off', dailySummary: 'off' }).settings).toMatchObject({ smtp: null, dailySummary: null });
  });

  it('report an email setup the page left without a recipient instead of dropping it silently', () => {
    const { settings, problems } = mergeAlertSettings(NO_FILE_ALERTS, checkPageSettings({ smtpHost: 'relay.example' }));
    expect(settings.smtp).toBeNull();
    expect(problems).toEqual(['email alerts are off: the SMTP server is set but the sender (From) or the recipients (To) are not']);
  });

  it('refuse a bad page value with a message for the form', () => {
    expect(() => checkPageSettings({ smtpPort: '99999' })).toThrow(AlertSettingsError);
    expect(() => checkPageSettings({ smtpPort: '99999' })).toThrow('SMTP port: "99999" is not a port number (1-65535)');
    expect(() => checkPageSettings({ dailySummary: 'noon' })).toThrow(/Daily summary: "noon" must be a time of day/);
  });

  it('systemd/config.example documents every alert key, and its example lines uncommented are a valid setup', () => {
    const example = readFileSync(path.join(import.meta.dirname, '..', '..', 'systemd', 'config.example'), 'utf8');
    const lines = example.split('\n').filter((l) => /^# alerts\./.test(l)).map((l) => l.slice(2));
    expect(lines.map((l) => l.split('=')[0].trim()).sort()).toEqual([...ALERT_CONFIG_KEYS].sort());
    const { settings, problems } = mergeAlertSettings(resolveConfig(parseConfigText(lines.join('\n'))).alerts, {});
    expect(problems).toEqual([]);
    expect(settings.smtp?.host).toBe('mail.example.org');
    expect(settings.dailySummary).toBeNull();
  });
});
