import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createPrivateKey, createPublicKey, sign, verify } from 'node:crypto';
import { promises as fs, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, it } from 'node:test';
import { PvmlabError } from '../../../src/core/errors.js';
import {
  ensureLabSshKey,
  ensureSshKey,
  generateEd25519,
  labSshKey,
  publicKeyFromOpenSshPrivate,
  publicKeyFromPrivate,
} from '../../../src/lab/sshkey.js';

const run = promisify(execFile);

async function tempDir(t: { after: (fn: () => Promise<void>) => void }): Promise<string> {
  const dir = await fs.mkdtemp(join(tmpdir(), 'pvmlab-sshkey-'));
  t.after(() => fs.rm(dir, { recursive: true, force: true }));
  return dir;
}

/** `ssh-ed25519 <base64> <comment>\n` -> its parts. */
function splitPublic(line: string): { type: string; blob: string; comment: string } {
  const m = /^(ssh-ed25519) ([A-Za-z0-9+/]+={0,2}) (\S+)\n$/.exec(line);
  assert.ok(m, `not an authorized_keys line: ${JSON.stringify(line)}`);
  return { type: m[1] as string, blob: m[2] as string, comment: m[3] as string };
}

describe('generateEd25519', () => {
  it('makes an OpenSSH private key and an authorized_keys line', () => {
    const pair = generateEd25519();
    assert.match(pair.privateKey, /^-----BEGIN OPENSSH PRIVATE KEY-----\n/);
    assert.match(pair.privateKey, /\n-----END OPENSSH PRIVATE KEY-----\n$/);
    for (const line of pair.privateKey.split('\n').slice(1, -2)) assert.ok(line.length <= 70, line);
    const pub = splitPublic(pair.publicKey);
    assert.equal(pub.type, 'ssh-ed25519');
    assert.equal(pub.comment, 'pvmlab');
    // The blob is string "ssh-ed25519" + string <32-byte key>.
    const blob = Buffer.from(pub.blob, 'base64');
    assert.equal(blob.length, 4 + 11 + 4 + 32);
    assert.equal(blob.readUInt32BE(0), 11);
    assert.equal(blob.subarray(4, 15).toString(), 'ssh-ed25519');
    assert.equal(blob.readUInt32BE(15), 32);
  });

  it('uses the given comment', () => {
    assert.equal(splitPublic(generateEd25519('lab@host').publicKey).comment, 'lab@host');
  });

  it('makes a different key each time', () => {
    assert.notEqual(generateEd25519().publicKey, generateEd25519().publicKey);
  });

  it('is accepted by ssh-keygen, which derives the same public key', async (t) => {
    const dir = await tempDir(t);
    for (let i = 0; i < 5; i++) {
      const pair = generateEd25519(`pvmlab-${i}`);
      const keyPath = join(dir, `key${i}`);
      await fs.writeFile(keyPath, pair.privateKey, { mode: 0o600 });
      const { stdout } = await run('ssh-keygen', ['-y', '-f', keyPath]);
      const fromSsh = stdout.trim().split(' ');
      const ours = splitPublic(pair.publicKey);
      assert.equal(fromSsh[0], 'ssh-ed25519');
      assert.equal(fromSsh[1], ours.blob);
      // ssh-keygen -l also reads the comment out of the private key.
      const { stdout: fp } = await run('ssh-keygen', ['-l', '-f', keyPath]);
      assert.match(fp, new RegExp(`^256 SHA256:\\S+ pvmlab-${i} \\(ED25519\\)\\n$`));
    }
  });

  it('holds a private key that matches its public key', () => {
    // Decode the openssh-key-v1 private section and sign with the seed through node:crypto.
    const pair = generateEd25519();
    const b64 = pair.privateKey.replace(/-----[A-Z ]+-----/g, '').replace(/\s+/g, '');
    const body = Buffer.from(b64, 'base64');
    const pubRaw = Buffer.from(splitPublic(pair.publicKey).blob, 'base64').subarray(19);
    const at = body.indexOf(Buffer.concat([pubRaw, Buffer.from([0, 0, 0, 64])]), 100);
    assert.ok(at > 0, 'private section holds the public key followed by the 64-byte secret');
    const seed = body.subarray(at + 36, at + 36 + 32);
    assert.deepEqual(body.subarray(at + 68, at + 100), pubRaw);
    const der = Buffer.concat([Buffer.from('302e020100300506032b657004220420', 'hex'), seed]);
    const priv = createPrivateKey({ key: der, format: 'der', type: 'pkcs8' });
    const pubDer = Buffer.concat([Buffer.from('302a300506032b6570032100', 'hex'), pubRaw]);
    const pub = createPublicKey({ key: pubDer, format: 'der', type: 'spki' });
    const sig = sign(null, Buffer.from('hello'), priv);
    assert.equal(verify(null, Buffer.from('hello'), pub, sig), true);
  });
});

describe('publicKeyFromOpenSshPrivate', () => {
  it('recovers the public key of a generated key', () => {
    const pair = generateEd25519();
    assert.equal(publicKeyFromOpenSshPrivate(pair.privateKey), pair.publicKey);
  });

  it('recovers the public key of a key made by ssh-keygen', async (t) => {
    const dir = await tempDir(t);
    const keyPath = join(dir, 'k');
    await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'someone', '-f', keyPath]);
    const pub = (await fs.readFile(`${keyPath}.pub`, 'utf8')).split(' ');
    const got = publicKeyFromOpenSshPrivate(await fs.readFile(keyPath, 'utf8'));
    assert.equal(got, `ssh-ed25519 ${pub[1]} pvmlab\n`);
  });

  it('rejects garbage with a PvmlabError', () => {
    const pair = generateEd25519();
    const lines = pair.privateKey.split('\n');
    const truncated = [...lines.slice(0, 3), '-----END OPENSSH PRIVATE KEY-----', ''].join('\n');
    const magicOnly = `-----BEGIN OPENSSH PRIVATE KEY-----\n${Buffer.from('openssh-key-v1\0').toString('base64')}\n-----END OPENSSH PRIVATE KEY-----\n`;
    const rsaPem =
      '-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\n-----END RSA PRIVATE KEY-----\n';
    for (const text of ['', 'garbage', 'not a key at all\n', rsaPem, magicOnly, truncated]) {
      assert.throws(
        () => publicKeyFromOpenSshPrivate(text),
        (err: unknown) =>
          err instanceof PvmlabError &&
          err.message === 'the lab SSH key is not an OpenSSH private key; remove it and run pvmlab setup',
        JSON.stringify(text.slice(0, 60)),
      );
    }
  });
});

describe('ensureSshKey', () => {
  it('creates the pair (0600 private key), then leaves it alone', async (t) => {
    const dir = await tempDir(t);
    const keyPath = join(dir, 'ssh', 'vm_key');
    const first = await ensureSshKey(keyPath);
    assert.equal(first.created, true);
    splitPublic(first.publicKey);
    assert.equal((await fs.stat(keyPath)).mode & 0o777, 0o600);
    assert.equal(await fs.readFile(`${keyPath}.pub`, 'utf8'), first.publicKey);
    const priv = await fs.readFile(keyPath, 'utf8');
    assert.equal(publicKeyFromOpenSshPrivate(priv), first.publicKey);

    const second = await ensureSshKey(keyPath);
    assert.deepEqual(second, { created: false, publicKey: first.publicKey });
    assert.equal(await fs.readFile(keyPath, 'utf8'), priv);
    assert.deepEqual((await fs.readdir(join(dir, 'ssh'))).sort(), ['vm_key', 'vm_key.pub']);

    const { stdout } = await run('ssh-keygen', ['-y', '-f', keyPath]);
    assert.equal(stdout.trim().split(' ')[1], splitPublic(first.publicKey).blob);
  });

  it('rewrites a missing .pub from the private key, without touching the private key', async (t) => {
    const dir = await tempDir(t);
    const keyPath = join(dir, 'vm_key');
    const first = await ensureSshKey(keyPath);
    const priv = await fs.readFile(keyPath, 'utf8');
    await fs.rm(`${keyPath}.pub`);
    const again = await ensureSshKey(keyPath);
    assert.deepEqual(again, { created: false, publicKey: first.publicKey });
    assert.equal(await fs.readFile(`${keyPath}.pub`, 'utf8'), first.publicKey);
    assert.equal(await fs.readFile(keyPath, 'utf8'), priv);
  });

  it('returns an existing .pub of the same pair as it is (its comment kept)', async (t) => {
    const dir = await tempDir(t);
    const keyPath = join(dir, 'vm_key');
    const { publicKey } = await ensureSshKey(keyPath);
    const custom = publicKey.replace(/ pvmlab\n$/, ' custom\n');
    await fs.writeFile(`${keyPath}.pub`, custom);
    assert.deepEqual(await ensureSshKey(keyPath), { created: false, publicKey: custom });
  });

  it('rewrites a .pub of another pair from the private key (the key ssh uses)', async (t) => {
    const dir = await tempDir(t);
    const keyPath = join(dir, 'vm_key');
    const { publicKey } = await ensureSshKey(keyPath);
    await fs.writeFile(`${keyPath}.pub`, 'ssh-ed25519 AAAA custom\n');
    assert.deepEqual(await ensureSshKey(keyPath), { created: false, publicKey });
    assert.equal(await fs.readFile(`${keyPath}.pub`, 'utf8'), publicKey);
  });

  it('parallel calls in a new lab agree on one pair, and leave no temp file', async (t) => {
    const dir = await tempDir(t);
    const keyPath = join(dir, 'ssh', 'vm_key');
    const got = await Promise.all(Array.from({ length: 16 }, () => ensureSshKey(keyPath)));
    assert.equal(got.filter((g) => g.created).length, 1);
    assert.equal(new Set(got.map((g) => g.publicKey.split(' ')[1])).size, 1);
    const priv = await fs.readFile(keyPath, 'utf8');
    assert.equal(publicKeyFromOpenSshPrivate(priv).split(' ')[1], got[0]?.publicKey.split(' ')[1]);
    assert.equal(await fs.readFile(`${keyPath}.pub`, 'utf8'), got[0]?.publicKey);
    assert.deepEqual((await fs.readdir(join(dir, 'ssh'))).sort(), ['vm_key', 'vm_key.pub']);
  });

  it('refuses a private key it cannot read when the .pub is missing', async (t) => {
    const dir = await tempDir(t);
    const keyPath = join(dir, 'vm_key');
    await fs.writeFile(keyPath, 'garbage\n', { mode: 0o600 });
    await assert.rejects(ensureSshKey(keyPath), PvmlabError);
    await assert.rejects(fs.stat(`${keyPath}.pub`), { code: 'ENOENT' });
  });
});

/** `ssh/vm_rsa` as the Go pvmlab left it: RSA 2048 PKCS#1 PEM, `.pub` without a comment. */
async function goKey(app: string): Promise<string> {
  const key = join(app, 'ssh', 'vm_rsa');
  await fs.mkdir(join(app, 'ssh'), { recursive: true });
  await run('ssh-keygen', ['-q', '-t', 'rsa', '-b', '2048', '-m', 'PEM', '-N', '', '-f', key]);
  const [type, blob] = (await fs.readFile(`${key}.pub`, 'utf8')).split(' ');
  await fs.writeFile(`${key}.pub`, `${type} ${blob}\n`);
  return `${type} ${blob}\n`;
}

describe('labSshKey', () => {
  it('picks vm_key, else the Go vm_rsa, else vm_key (to be generated)', async (t) => {
    const app = await tempDir(t);
    const vmKey = { path: join(app, 'ssh', 'vm_key'), kind: 'ed25519' };
    assert.deepEqual(await labSshKey(app), vmKey);
    await goKey(app);
    assert.deepEqual(await labSshKey(app), { path: join(app, 'ssh', 'vm_rsa'), kind: 'go-rsa' });
    await ensureSshKey(vmKey.path);
    assert.deepEqual(await labSshKey(app), vmKey);
  });

  it('does not take a directory for a key', async (t) => {
    const app = await tempDir(t);
    await fs.mkdir(join(app, 'ssh', 'vm_key'), { recursive: true });
    await goKey(app);
    assert.deepEqual(await labSshKey(app), { path: join(app, 'ssh', 'vm_rsa'), kind: 'go-rsa' });
  });
});

describe('ensureLabSshKey', () => {
  it("uses the Go tool's vm_rsa and never generates a second key; generates vm_key only in a lab without one", async (t) => {
    const goLab = await tempDir(t);
    const pub = await goKey(goLab);
    const key = await ensureLabSshKey(goLab);
    assert.deepEqual(key, {
      path: join(goLab, 'ssh', 'vm_rsa'),
      kind: 'go-rsa',
      created: false,
      publicKey: pub,
    });
    assert.deepEqual((await fs.readdir(join(goLab, 'ssh'))).sort(), ['vm_rsa', 'vm_rsa.pub']);

    const newLab = await tempDir(t);
    const made = await ensureLabSshKey(newLab);
    assert.deepEqual([made.path, made.kind, made.created], [join(newLab, 'ssh', 'vm_key'), 'ed25519', true]);
    assert.equal(await fs.readFile(`${made.path}.pub`, 'utf8'), made.publicKey);
  });

  it('rewrites a missing vm_rsa.pub as the Go tool wrote it (no comment)', async (t) => {
    const app = await tempDir(t);
    const pub = await goKey(app);
    await fs.rm(join(app, 'ssh', 'vm_rsa.pub'));
    const key = await ensureLabSshKey(app);
    assert.equal(key.publicKey, pub);
    assert.equal(await fs.readFile(join(app, 'ssh', 'vm_rsa.pub'), 'utf8'), pub);
    assert.deepEqual((await fs.readdir(join(app, 'ssh'))).sort(), ['vm_rsa', 'vm_rsa.pub']);
  });
});

describe('publicKeyFromPrivate', () => {
  it('derives what ssh-keygen derives from PEM RSA keys (PKCS#1 and PKCS#8), still reads OpenSSH keys', async (t) => {
    const dir = await tempDir(t);
    for (const format of ['PEM', 'PKCS8']) {
      const key = join(dir, `rsa-${format}`);
      await run('ssh-keygen', ['-q', '-t', 'rsa', '-b', '2048', '-m', format, '-N', '', '-f', key]);
      const { stdout } = await run('ssh-keygen', ['-y', '-f', key]);
      const [type, blob] = stdout.trim().split(' ');
      assert.equal(publicKeyFromPrivate(await fs.readFile(key, 'utf8')), `${type} ${blob}\n`, format);
    }
    const pair = generateEd25519();
    assert.equal(publicKeyFromPrivate(pair.privateKey), pair.publicKey);
  });

  it('refuses a non-RSA PEM key and text that is no key', async (t) => {
    const dir = await tempDir(t);
    const key = join(dir, 'ec');
    await run('ssh-keygen', ['-q', '-t', 'ecdsa', '-m', 'PEM', '-N', '', '-f', key]);
    assert.throws(() => publicKeyFromPrivate(readFileSync(key, 'utf8')), /is a PEM EC key; pvmlab reads RSA/);
    assert.throws(() => publicKeyFromPrivate('garbage\n'), PvmlabError);
  });
});
