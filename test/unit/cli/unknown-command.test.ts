/* eslint-disable no-control-regex -- these tests look for control characters in the output */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { closestCommand } from '../../../src/cli/main.js';
import { runCli, tempHome } from '../../helpers/cli.js';

test('closestCommand: typos and prefixes, nothing for a word that is not close', () => {
  const vm = ['create', 'start', 'stop', 'list', 'shell', 'events', 'logs', 'console', 'clean', 'copy'];
  assert.equal(closestCommand('evnets', vm), 'events');
  assert.equal(closestCommand('ev', vm), 'events');
  assert.equal(closestCommand('lsit', vm), 'list');
  assert.equal(closestCommand('stat', vm), 'start');
  assert.equal(closestCommand('frobnicate', vm), undefined);
  assert.equal(closestCommand('x', ['ls', 'list', 'pull']), undefined);
});

describe('an unknown subcommand is named as such, exit 2', () => {
  let home: string;
  let cleanup: () => Promise<void>;
  before(async () => ({ home, cleanup } = await tempHome('pvunk-')));
  after(() => cleanup());

  test('in every command group, with the closest command and the list', async () => {
    for (const [args, re] of [
      [['vm', 'frobnicate'], /unknown command 'vm frobnicate' \('vm' commands: create, start, stop, list/],
      [['vm', 'evnets', 'x'], /unknown command 'vm evnets'; did you mean 'vm events'\?/],
      [['stack', 'stauts'], /unknown command 'stack stauts'; did you mean 'stack status'\?/],
      [['distro', 'pul'], /unknown command 'distro pul'; did you mean 'distro pull'\?/],
      [['network', 'up'], /unknown command 'network up' \('network' commands: start, stop, status\)/],
      [['socket_vmnet', 'restart'], /unknown command 'socket_vmnet restart'/],
      [['system', 'setup'], /unknown command 'system setup'; did you mean 'system setup-launchd'\?/],
      [['vmm'], /unknown command 'vmm'; did you mean 'vm'\?/],
    ] as const) {
      const r = await runCli([...args], { home });
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, re);
      assert.doesNotMatch(r.stderr, /too many arguments/);
    }
  });

  test('a bare group still prints its help; `vm help create` the command help', async () => {
    const bare = await runCli(['vm'], { home });
    assert.equal(bare.code, 0);
    assert.match(bare.stdout, /Usage: pvmlab vm/);
    const help = await runCli(['vm', 'help', 'create'], { home });
    assert.equal(help.code, 0, help.stderr);
    assert.match(help.stdout, /Usage: pvmlab vm create/);
  });

  test('the word echoed back is escaped: no escape sequence or forged line reaches the terminal', async () => {
    for (const args of [
      ['vm', '\u001b[31mred\nError: forged'],
      ['vm', 'list', '--\u001b[2J'],
      ['vm', 'start', 'a\u001b]0;title\u0007'],
    ]) {
      const r = await runCli(args, { home });
      assert.equal(r.code, 2, r.stderr);
      assert.doesNotMatch(r.stderr, /\u001b|\u0007/, JSON.stringify(r.stderr));
      assert.doesNotMatch(r.stderr, /^Error: forged/m);
      assert.match(r.stderr, /\\x1b/);
    }
  });
});
