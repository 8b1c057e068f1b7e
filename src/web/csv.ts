/**
 * CSV for spreadsheets (RFC 4180: comma, CRLF, fields quoted when they hold a comma, a quote or
 * a line break). A cell a spreadsheet would read as a formula gets a leading apostrophe: host
 * names, serials and task reasons come from PCs and technicians, and a name like
 * "=HYPERLINK(...)" must stay text when someone opens the export (OWASP "CSV injection").
 */

export type CsvCell = string | number | boolean | null | undefined;

/** First characters that make Excel, LibreOffice or Sheets evaluate a cell (tab and CR too, per OWASP). */
const FORMULA_START = /^[=+\-@\t\r]/;

export function csvCell(value: CsvCell): string {
  if (value === null || value === undefined) return '';
  // Numbers the server computed are data, not formulas, even when negative.
  if (typeof value === 'number') return Number.isFinite(value) ? String(value) : '';
  if (typeof value === 'boolean') return value ? 'yes' : 'no';
  const text = FORMULA_START.test(value) ? `'${value}` : value;
  return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

export function csvLine(cells: readonly CsvCell[]): string {
  return `${cells.map(csvCell).join(',')}\r\n`;
}

/** A header line, then one line per row. */
export function csvDocument(header: readonly string[], rows: readonly (readonly CsvCell[])[]): string {
  return csvLine(header) + rows.map(csvLine).join('');
}
