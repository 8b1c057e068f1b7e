/**
 * A static check of the iPXE scripts we generate, by iPXE's own rules (https://ipxe.org/scripting):
 * a line is a label (":name"), a comment, or commands joined by "&&" / "||"; a command name must be
 * one iPXE has; every "goto" target and every menu item's label must exist; "${" must close. iPXE
 * itself finds these only on the path it runs, so a menu branch nobody chose in a VM test could
 * still be broken without this.
 */

/** Commands our scripts may use; all are in iPXE's command reference. */
const COMMANDS = new Set([
  'boot', 'chain', 'choose', 'clear', 'echo', 'exit', 'goto', 'imgexec', 'imgfetch', 'initrd', 'iseq', 'isset',
  'item', 'kernel', 'login', 'menu', 'param', 'params', 'prompt', 'sanboot', 'set', 'sleep',
]);
/** Options that take a value, per command (the rest are flags). */
const VALUED: Record<string, ReadonlySet<string>> = {
  item: new Set(['--key']),
  choose: new Set(['--timeout', '--default', '--menu']),
  prompt: new Set(['--timeout', '--key']),
  imgfetch: new Set(['--name']),
  initrd: new Set(['--name']),
  kernel: new Set(['--name']),
  sanboot: new Set(['--drive', '--filename', '--extra', '--label', '--uuid']),
  param: new Set(['--params']),
  params: new Set(['--name']),
  menu: new Set(['--name']),
};

function positional(command: string, args: string[]): string[] {
  const out: string[] = [];
  const valued = VALUED[command] ?? new Set<string>();
  for (let i = 0; i < args.length; i++) {
    if (args[i].startsWith('--') && out.length === 0) {
      if (valued.has(args[i])) i++;
      continue;
    }
    out.push(args[i]);
  }
  return out;
}

export function lintIpxe(script: string): string[] {
  const problems: string[] = [];
  const lines = script.split('\n');
  if (lines[0] !== '#!ipxe') problems.push('line 1: a script must start with "#!ipxe"');
  const labels = new Set<string>();
  for (const line of lines) {
    const m = /^:([A-Za-z0-9_-]+)$/.exec(line.trim());
    if (m) {
      if (labels.has(m[1])) problems.push(`label :${m[1]} defined twice`);
      labels.add(m[1]);
    }
  }
  const gotos: Array<{ line: number; target: string }> = [];
  const itemLabels: Array<{ line: number; label: string }> = [];
  const chosen = new Set<string>();
  lines.forEach((raw, idx) => {
    const n = idx + 1;
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(':')) return;
    let depth = 0;
    for (let i = 0; i < line.length; i++) {
      if (line[i] === '$' && line[i + 1] === '{') {
        depth++;
        i++;
      } else if (line[i] === '}' && depth > 0) depth--;
    }
    if (depth !== 0) problems.push(`line ${n}: unclosed "\${": ${line}`);
    // Quoting differs between iPXE versions; our scripts never need it, so a quote is a mistake.
    if (/['"]/.test(line)) problems.push(`line ${n}: quote character (iPXE versions quote differently): ${line}`);
    const tokens = line.split(/\s+/);
    const commands: string[][] = [[]];
    for (const t of tokens) {
      if (t === '&&' || t === '||') commands.push([]);
      else commands[commands.length - 1].push(t);
    }
    commands.forEach((words, ci) => {
      if (words.length === 0) {
        // Only a trailing "||" / "&&" may be empty: "cmd ||" ignores a failure of cmd.
        if (ci !== commands.length - 1 || ci === 0) problems.push(`line ${n}: empty command: ${line}`);
        return;
      }
      const [name, ...args] = words;
      if (!COMMANDS.has(name)) {
        problems.push(`line ${n}: unknown command "${name}": ${line}`);
        return;
      }
      const pos = positional(name, args);
      switch (name) {
        case 'goto':
          if (pos.length !== 1) problems.push(`line ${n}: goto takes one label: ${line}`);
          else gotos.push({ line: n, target: pos[0] });
          break;
        case 'item':
          if (!args.includes('--gap')) {
            if (pos.length < 1) problems.push(`line ${n}: item without a label: ${line}`);
            else itemLabels.push({ line: n, label: pos[0] });
          }
          break;
        case 'choose':
          if (pos.length !== 1) problems.push(`line ${n}: choose stores into one setting: ${line}`);
          else chosen.add(pos[0]);
          break;
        case 'iseq':
          if (pos.length !== 2) problems.push(`line ${n}: iseq compares two values: ${line}`);
          break;
        case 'param':
          if (pos.length < 1) problems.push(`line ${n}: param needs a key: ${line}`);
          break;
        case 'chain':
        case 'imgfetch':
        case 'kernel':
        case 'initrd':
          if (pos.length < 1 || !/^(https?|tftp):\/\//.test(pos[0]) && !/^[a-z]+$/.test(pos[0])) problems.push(`line ${n}: ${name} needs a URI: ${line}`);
          if (pos[0]?.includes('##params') && !lines.some((l) => /^params\b/.test(l.trim()))) problems.push(`line ${n}: ##params without a params command`);
          break;
        case 'login':
        case 'params':
          if (pos.length !== 0) problems.push(`line ${n}: ${name} takes no arguments: ${line}`);
          break;
        default:
          break;
      }
    });
  });
  for (const g of gotos) {
    const setting = /^\$\{(.+)\}$/.exec(g.target);
    if (setting) {
      if (!chosen.has(setting[1])) problems.push(`line ${g.line}: goto ${g.target}: no choose stores into ${setting[1]}`);
      continue;
    }
    if (!labels.has(g.target)) problems.push(`line ${g.line}: goto ${g.target}: no such label`);
  }
  for (const it of itemLabels) {
    if (!labels.has(it.label)) problems.push(`line ${it.line}: menu item "${it.label}" has no label to go to`);
  }
  return problems;
}
