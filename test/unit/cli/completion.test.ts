import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import { which } from '../../../src/core/exec.js';
import {
  bashCompletion,
  commandTree,
  fishCompletion,
  zshCompletion,
  type CommandNode,
} from '../../../src/cli/completion.js';
import { buildProgram } from '../../../src/cli/main.js';
import { fakeRunner, shortTempDir } from '../../helpers/qemu.js';

async function tree(t: { after: (fn: () => unknown) => void }): Promise<CommandNode[]> {
  const { dir, cleanup } = await shortTempDir('pv-cmp-');
  t.after(cleanup);
  const program = buildProgram({ app: join(dir, '.pvmlab'), runner: fakeRunner().runner, env: {} });
  return commandTree(program as unknown as Command);
}

const node = (nodes: CommandNode[], path: string) => {
  const n = nodes.find((x) => x.path.join(' ') === path);
  assert.ok(n, `no node '${path}'`);
  return n;
};

test('commandTree: root, vm group and vm start', async (t) => {
  const nodes = await tree(t);
  const root = node(nodes, '');
  assert.deepEqual(root.subcommands, [
    'setup',
    'clean',
    'vm',
    'provisioner',
    'network',
    'socket_vmnet',
    'system',
    'stack',
    'distro',
    'completion',
  ]);
  assert.ok(!root.subcommands.includes('__vms'), 'hidden commands are not completed');
  assert.deepEqual(root.options, ['--version', '-v', '--help']);
  assert.equal(root.takesVm, false);

  const vm = node(nodes, 'vm');
  assert.deepEqual(vm.subcommands, [
    'create',
    'start',
    'stop',
    'list',
    'shell',
    'events',
    'logs',
    'console',
    'clean',
    'copy',
  ]);
  assert.equal(vm.takesVm, false);

  assert.deepEqual(node(nodes, 'vm start'), {
    path: ['vm', 'start'],
    description: 'Start a VM in the background (or attached to its serial console with -i)',
    options: [
      '--wait',
      '--interactive',
      '-i',
      '--boot',
      '--installer-no-reboot',
      '--accel',
      '--memory',
      '--cpus',
      '--help',
    ],
    subcommands: [],
    takesVm: true,
  });
  assert.equal(node(nodes, 'vm stop').takesVm, true);
  assert.equal(node(nodes, 'vm clean').takesVm, true); // [vm-name] is optional but still a VM
  assert.equal(node(nodes, 'vm list').takesVm, false);
  assert.equal(node(nodes, 'vm copy').takesVm, false);
  assert.deepEqual(node(nodes, 'network').subcommands, ['start', 'stop', 'status']);
  assert.deepEqual(
    nodes.map((n) => n.path.join(' ')).filter((p) => p.includes('__vms')),
    [],
  );
});

/** Source the bash script, fake `pvmlab __vms`, complete `words` at `cword`; COMPREPLY, one per line. */
function bashComplete(script: string, words: string[], cword = words.length - 1): string[] {
  const quoted = words.map((w) => `'${w}'`).join(' ');
  const r = spawnSync(
    'bash',
    [
      '--norc',
      '--noprofile',
      '-c',
      `source "$1"
pvmlab() { [[ "$1" == __vms ]] && printf 'web1\\nweb2\\ndb1\\n'; }
COMP_WORDS=(${quoted}); COMP_CWORD=${cword}
_pvmlab
printf '%s\\n' "\${COMPREPLY[@]}"`,
      'bash',
      script,
    ],
    { encoding: 'utf8' },
  );
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stderr, '');
  return r.stdout.split('\n').filter((l) => l.length > 0);
}

test('bash completion passes bash -n and completes for real', async (t) => {
  const nodes = await tree(t);
  const { dir, cleanup } = await shortTempDir('pv-cmp-');
  t.after(cleanup);
  const script = join(dir, 'pvmlab.bash');
  writeFileSync(script, bashCompletion(nodes));
  const syntax = spawnSync('bash', ['-n', script], { encoding: 'utf8' });
  assert.equal(syntax.status, 0, syntax.stderr);

  // `status` starts with "st" too, but it belongs to network, not vm.
  assert.deepEqual(bashComplete(script, ['pvmlab', 'vm', 'st']), ['start', 'stop']);
  assert.deepEqual(bashComplete(script, ['pvmlab', 'network', 'st']), ['start', 'stop', 'status']);
  assert.deepEqual(bashComplete(script, ['pvmlab', 'ne']), ['network']);
  assert.deepEqual(bashComplete(script, ['pvmlab', '']), [
    'setup',
    'clean',
    'vm',
    'provisioner',
    'network',
    'socket_vmnet',
    'system',
    'stack',
    'distro',
    'completion',
    '--version',
    '-v',
    '--help',
  ]);
  // A VM-taking command completes VM names from `pvmlab __vms`, and its flags after a dash.
  assert.deepEqual(bashComplete(script, ['pvmlab', 'vm', 'start', '']), ['web1', 'web2', 'db1']);
  assert.deepEqual(bashComplete(script, ['pvmlab', 'vm', 'stop', 'w']), ['web1', 'web2']);
  assert.deepEqual(bashComplete(script, ['pvmlab', 'vm', 'start', '--i']), [
    '--interactive',
    '--installer-no-reboot',
  ]);
  // Options before the subcommand are skipped when walking the path.
  assert.deepEqual(bashComplete(script, ['pvmlab', 'vm', 'start', '--wait', 'web1', '--b']), ['--boot']);
  // Same leaf name, different group: `network start` takes no VM.
  assert.deepEqual(bashComplete(script, ['pvmlab', 'network', 'start', '']), ['--help']);
  assert.deepEqual(bashComplete(script, ['pvmlab', 'vm', 'clean', '--']), ['--all', '--help']);
  assert.deepEqual(bashComplete(script, ['pvmlab', 'clean', '--']), ['--purge', '--help']);
  // Completing in the middle of the line only looks at the words before the cursor.
  assert.deepEqual(bashComplete(script, ['pvmlab', 'vm', 'cr', 'web1'], 2), ['create']);
});

test('zsh completion wraps the bash one through bashcompinit', async (t) => {
  const nodes = await tree(t);
  const zsh = zshCompletion(nodes);
  assert.equal(
    zsh,
    '#compdef pvmlab\n# zsh completion for pvmlab; load with: source <(pvmlab completion zsh)\n' +
      `autoload -U +X bashcompinit && bashcompinit\n${bashCompletion(nodes)}`,
  );
  if (!which('zsh')) {
    t.diagnostic('zsh is not installed: zsh -n not run');
    return;
  }
  const { dir, cleanup } = await shortTempDir('pv-cmp-');
  t.after(cleanup);
  writeFileSync(join(dir, '_pvmlab'), zsh);
  const r = spawnSync('zsh', ['-n', join(dir, '_pvmlab')], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
});

const VM_START =
  "'__fish_seen_subcommand_from vm; and __fish_seen_subcommand_from start; and not __fish_seen_subcommand_from provisioner network socket_vmnet system stack distro'";

test('fish completion lines', async (t) => {
  const nodes = await tree(t);
  const lines = fishCompletion(nodes).split('\n');
  const expected = [
    '# fish completion for pvmlab; load with: pvmlab completion fish | source',
    'complete -c pvmlab -f',
    "complete -c pvmlab -n '__fish_use_subcommand' -a vm -d 'Create, run and remove target VMs'",
    "complete -c pvmlab -n '__fish_use_subcommand' -l version",
    "complete -c pvmlab -n '__fish_seen_subcommand_from vm; and not __fish_seen_subcommand_from provisioner network socket_vmnet system stack distro; and not __fish_seen_subcommand_from create start stop list shell events logs console clean copy' -a start -d 'Start a VM in the background (or attached to its serial console with -i)'",
    `complete -c pvmlab -n ${VM_START} -l wait`,
    `complete -c pvmlab -n ${VM_START} -l interactive`,
    `complete -c pvmlab -n ${VM_START} -l boot`,
    `complete -c pvmlab -n ${VM_START} -a '(pvmlab __vms 2>/dev/null)'`,
    "complete -c pvmlab -n '__fish_seen_subcommand_from vm; and not __fish_seen_subcommand_from provisioner network socket_vmnet system stack distro; and not __fish_seen_subcommand_from create start stop list shell events logs console clean copy' -a logs -d 'Show a VM'\\''s serial console log and follow it'",
    "complete -c pvmlab -n '__fish_seen_subcommand_from network; and __fish_seen_subcommand_from start; and not __fish_seen_subcommand_from vm provisioner socket_vmnet system stack distro' -l help",
    "complete -c pvmlab -n '__fish_seen_subcommand_from clean; and not __fish_seen_subcommand_from vm provisioner network socket_vmnet system stack distro' -l purge",
  ];
  for (const line of expected) assert.ok(lines.includes(line), `missing: ${line}`);
  assert.equal(lines[0], expected[0]);
  assert.equal(lines[1], expected[1]);
  assert.equal(lines.at(-1), '', 'ends with a newline');
  // Short flags are not offered as -l, and hidden commands are not offered at all.
  assert.equal(
    lines.some((l) => / -l i$/.test(l) || l.includes('__vms -d')),
    false,
  );
  // Only VM-taking commands complete VM names: vm create/start/stop/shell/events/logs/console/clean
  // and provisioner create.
  assert.equal(lines.filter((l) => l.endsWith("-a '(pvmlab __vms 2>/dev/null)'")).length, 9);
});

/** `complete -C` in a real fish with the script loaded and `pvmlab __vms` faked; candidates only. */
function fishComplete(script: string, line: string): string[] {
  const r = spawnSync(
    'fish',
    [
      '--no-config',
      '-c',
      `function pvmlab; printf 'web1\\nweb2\\n'; end; source $argv[1]; complete -C $argv[2]`,
      script,
      line,
    ],
    { encoding: 'utf8' },
  );
  assert.equal(r.status, 0, r.stderr);
  return r.stdout
    .split('\n')
    .filter((l) => l.length > 0)
    .map((l) => l.split('\t')[0] ?? '')
    .sort();
}

test('fish completion completes for real', async (t) => {
  assert.ok(which('fish'), 'fish is needed for this test: apt-get install fish (.ci/run installs it)');
  const nodes = await tree(t);
  const { dir, cleanup } = await shortTempDir('pv-cmp-');
  t.after(cleanup);
  const script = join(dir, 'pvmlab.fish');
  writeFileSync(script, fishCompletion(nodes));
  const syntax = spawnSync('fish', ['--no-config', '-n', script], { encoding: 'utf8' });
  assert.equal(syntax.status, 0, syntax.stderr);

  assert.deepEqual(fishComplete(script, 'pvmlab vm st'), ['start', 'stop']);
  assert.deepEqual(fishComplete(script, 'pvmlab vm start '), ['web1', 'web2']);
  assert.deepEqual(fishComplete(script, 'pvmlab vm start --'), [
    '--accel',
    '--boot',
    '--cpus',
    '--help',
    '--installer-no-reboot',
    '--interactive',
    '--memory',
    '--wait',
  ]);
  // Leaf names shared across groups must not leak: no VM names or vm flags for `network start`.
  assert.deepEqual(fishComplete(script, 'pvmlab network start '), []);
  assert.deepEqual(fishComplete(script, 'pvmlab network start --'), ['--help']);
  assert.deepEqual(fishComplete(script, 'pvmlab vm clean --'), ['--all', '--help']);
  assert.deepEqual(fishComplete(script, 'pvmlab clean --'), ['--help', '--purge']);
});
