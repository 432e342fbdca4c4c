import { createPublicKey, generateKeyPairSync, randomBytes, type JsonWebKey } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { dirname, join } from 'node:path';
import { PvmlabError, isErrno } from '../core/errors.js';
import { namedFsError, writeFileAtomic } from '../core/fsutil.js';
import { labDirs } from '../core/paths.js';

function sshString(data: Uint8Array | string): Buffer {
  const b = typeof data === 'string' ? Buffer.from(data) : Buffer.from(data);
  const len = Buffer.alloc(4);
  len.writeUInt32BE(b.length);
  return Buffer.concat([len, b]);
}

function uint32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
}

export interface SshKeyPair {
  privateKey: string;
  publicKey: string;
}

/** An ed25519 key pair in OpenSSH's own formats (openssh-key-v1 private, authorized_keys public). */
export function generateEd25519(comment = 'pvmlab'): SshKeyPair {
  const { privateKey } = generateKeyPairSync('ed25519');
  const jwk = privateKey.export({ format: 'jwk' });
  if (!jwk.d || !jwk.x) throw new PvmlabError('ed25519 key generation returned no key material');
  const seed = Buffer.from(jwk.d, 'base64url');
  const pub = Buffer.from(jwk.x, 'base64url');
  const pubBlob = Buffer.concat([sshString('ssh-ed25519'), sshString(pub)]);
  const check = randomBytes(4).readUInt32BE();
  let priv = Buffer.concat([
    uint32(check),
    uint32(check),
    sshString('ssh-ed25519'),
    sshString(pub),
    sshString(Buffer.concat([seed, pub])),
    sshString(comment),
  ]);
  const pad: number[] = [];
  for (let i = 1; (priv.length + pad.length) % 8 !== 0; i++) pad.push(i);
  priv = Buffer.concat([priv, Buffer.from(pad)]);
  const body = Buffer.concat([
    Buffer.from('openssh-key-v1\0'),
    sshString('none'),
    sshString('none'),
    sshString(''),
    uint32(1),
    sshString(pubBlob),
    sshString(priv),
  ]);
  const b64 = body.toString('base64').replace(/.{1,70}/g, '$&\n');
  return {
    privateKey: `-----BEGIN OPENSSH PRIVATE KEY-----\n${b64}-----END OPENSSH PRIVATE KEY-----\n`,
    publicKey: `ssh-ed25519 ${pubBlob.toString('base64')} ${comment}\n`,
  };
}

export type LabKeyKind = 'ed25519' | 'go-rsa';

export interface LabKey {
  path: string;
  kind: LabKeyKind;
}

/** The lab key files: ours, and the one the Go pvmlab made (`ssh-rsa`, PKCS#1 PEM). */
function labKeyFiles(app: string): Record<LabKeyKind, string> {
  const dir = labDirs(app).ssh;
  return { ed25519: join(dir, 'vm_key'), 'go-rsa': join(dir, 'vm_rsa') };
}

/**
 * The lab's SSH key, the one place that picks it: `vm_key` if present; else the Go pvmlab's
 * `vm_rsa` (the VMs it made authorise only that key); else `vm_key`, to be generated. At most
 * two stats, so only the commands that use the key pay for it.
 */
export async function labSshKey(app: string): Promise<LabKey> {
  const files = labKeyFiles(app);
  if (await isFile(files.ed25519)) return { path: files.ed25519, kind: 'ed25519' };
  if (await isFile(files['go-rsa'])) return { path: files['go-rsa'], kind: 'go-rsa' };
  return { path: files.ed25519, kind: 'ed25519' };
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await fs.stat(path)).isFile();
  } catch (err) {
    if (isErrno(err, 'ENOENT') || isErrno(err, 'ENOTDIR')) return false;
    throw err;
  }
}

/**
 * The lab key (labSshKey) with its public half, generating an ed25519 pair only when the lab
 * has no key at all: a lab with `vm_rsa` never gets a second key its VMs would not accept.
 */
export async function ensureLabSshKey(
  app: string,
): Promise<LabKey & { created: boolean; publicKey: string }> {
  const key = await labSshKey(app);
  if (key.kind === 'go-rsa') return { ...key, created: false, publicKey: await publicKeyOf(key.path) };
  return { ...key, ...(await ensureSshKey(key.path)) };
}

let tmpCounter = 0;

/**
 * Make sure an ed25519 key pair exists at `path` (see ensureLabSshKey for the lab's key).
 * Parallel commands in a new lab race here: each writes its pair to temp names and `link()`s
 * the private key into place, which only one can do; the others drop theirs and use the
 * winner's. `<path>.pub` is always checked against (and if need be rewritten from) the private
 * key, so the two files are one pair whatever happened in between.
 */
export async function ensureSshKey(path: string): Promise<{ created: boolean; publicKey: string }> {
  await fs.mkdir(dirname(path), { recursive: true, mode: 0o700 }).catch((err: unknown) => {
    throw namedFsError(err, `cannot create ${dirname(path)}`);
  });
  if (await isFile(path)) return { created: false, publicKey: await publicKeyOf(path, true) };
  const pair = generateEd25519();
  const tmp = `${path}.${process.pid}.${++tmpCounter}.tmp`;
  try {
    await writeNew(tmp, pair.privateKey, 0o600, path);
    await writeNew(`${tmp}.pub`, pair.publicKey, 0o644, `${path}.pub`);
    try {
      await fs.link(tmp, path);
    } catch (err) {
      if (isErrno(err, 'EEXIST')) return { created: false, publicKey: await publicKeyOf(path, true) };
      throw namedFsError(err, `cannot create ${path}`);
    }
    await fs.rename(`${tmp}.pub`, `${path}.pub`).catch((err: unknown) => {
      throw namedFsError(err, `cannot write ${path}.pub`);
    });
    return { created: true, publicKey: pair.publicKey };
  } finally {
    await Promise.all([fs.rm(tmp, { force: true }), fs.rm(`${tmp}.pub`, { force: true })]);
  }
}

/** Write a new file (exclusive create, fsynced), the error naming the file it is for. */
async function writeNew(path: string, data: string, mode: number, forPath: string): Promise<void> {
  try {
    const fh = await fs.open(path, 'wx', mode);
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
  } catch (err) {
    throw namedFsError(err, `cannot write the lab SSH key ${forPath}`);
  }
}

/**
 * `<path>.pub`; if it went missing, rewritten from the private key (the Go pvmlab failed
 * later in that case). With `verify` (our ed25519 key), a `.pub` of another pair (left by a
 * race of an older pvmlab) is rewritten too: the private key is the one ssh uses.
 */
async function publicKeyOf(path: string, verify = false): Promise<string> {
  let pub: string | undefined;
  try {
    pub = await fs.readFile(`${path}.pub`, 'utf8');
  } catch (err) {
    if (!isErrno(err, 'ENOENT')) throw new PvmlabError(namedFsError(err, `cannot read ${path}.pub`).message);
  }
  if (pub !== undefined && !verify) return pub;
  let priv: string;
  try {
    priv = await fs.readFile(path, 'utf8');
  } catch (err) {
    throw new PvmlabError(namedFsError(err, `cannot read the lab SSH key ${path}`).message);
  }
  let derived: string;
  try {
    derived = publicKeyFromPrivate(priv);
  } catch (err) {
    throw new PvmlabError(`${path}: ${(err as Error).message}`);
  }
  if (pub !== undefined && keyBlob(pub) === keyBlob(derived)) return pub;
  await writeFileAtomic(`${path}.pub`, derived, 0o644);
  return derived;
}

/** `type base64` of an authorized_keys line, without the comment. */
function keyBlob(line: string): string {
  return line.trim().split(/\s+/).slice(0, 2).join(' ');
}

/** The authorized_keys line of an unencrypted OpenSSH or PEM (PKCS#1/PKCS#8 RSA) private key. */
export function publicKeyFromPrivate(text: string): string {
  if (text.includes('-----BEGIN OPENSSH PRIVATE KEY-----')) return publicKeyFromOpenSshPrivate(text);
  let jwk: JsonWebKey;
  try {
    jwk = createPublicKey(text).export({ format: 'jwk' });
  } catch {
    throw new PvmlabError('the lab SSH key is not a private key pvmlab can read (OpenSSH, or PEM RSA)');
  }
  if (jwk.kty !== 'RSA' || !jwk.n || !jwk.e)
    throw new PvmlabError(`the lab SSH key is a PEM ${jwk.kty ?? 'non-RSA'} key; pvmlab reads RSA ones`);
  return sshRsaPublicKey(Buffer.from(jwk.e, 'base64url'), Buffer.from(jwk.n, 'base64url'));
}

/** `ssh-rsa <blob>\n` with no comment, as the Go pvmlab wrote `vm_rsa.pub`. */
function sshRsaPublicKey(e: Buffer, n: Buffer): string {
  const blob = Buffer.concat([sshString('ssh-rsa'), sshString(mpint(e)), sshString(mpint(n))]);
  return `ssh-rsa ${blob.toString('base64')}\n`;
}

/** An unsigned big-endian integer as SSH's mpint: a leading zero keeps the top bit clear. */
function mpint(b: Buffer): Buffer {
  let i = 0;
  while (i < b.length - 1 && b[i] === 0) i++;
  const v = b.subarray(i);
  return (v[0] ?? 0) & 0x80 ? Buffer.concat([Buffer.from([0]), v]) : v;
}

/** Recover `ssh-ed25519 <blob> <comment>` from an unencrypted openssh-key-v1 private key. */
export function publicKeyFromOpenSshPrivate(pem: string): string {
  const notAKey = () =>
    new PvmlabError('the lab SSH key is not an OpenSSH private key; remove it and run pvmlab setup');
  const b64 = pem.replace(/-----(BEGIN|END) OPENSSH PRIVATE KEY-----/g, '').replace(/\s+/g, '');
  const body = Buffer.from(b64, 'base64');
  const magic = 'openssh-key-v1\0';
  if (body.subarray(0, magic.length).toString() !== magic) throw notAKey();
  let off = magic.length;
  // A truncated or corrupt key must give the message above, not a RangeError.
  const next = (): Buffer => {
    if (off + 4 > body.length) throw notAKey();
    const len = body.readUInt32BE(off);
    if (off + 4 + len > body.length) throw notAKey();
    const v = body.subarray(off + 4, off + 4 + len);
    off += 4 + len;
    return v;
  };
  next(); // cipher
  next(); // kdf
  next(); // kdf options
  if (off + 4 > body.length) throw notAKey();
  off += 4; // key count
  const pubBlob = next();
  next(); // the private section: present in full
  if (pubBlob.length < 4 || 4 + pubBlob.readUInt32BE(0) > pubBlob.length) throw notAKey();
  const keyType = pubBlob.subarray(4, 4 + pubBlob.readUInt32BE(0)).toString();
  if (!/^[\x21-\x7e]+$/.test(keyType)) throw notAKey();
  return `${keyType} ${pubBlob.toString('base64')} pvmlab\n`;
}
